"""What landmark mode needs around it: the vendored landmarker (scripts/vendor_web.py) served from a fixed table
with the right content types, the page's CSP, `enliven serve --landmarks-only` and its settings."""
from __future__ import annotations

import argparse
import importlib.util
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from server_harness import Server

from enliven.server import vendor
from enliven.server.cli import add_serve_parser, config_from_args, run_serve
from enliven.server.config import ServerConfig

ROOT = Path(__file__).resolve().parents[2]


def _vendor_script():  # scripts/ is not a package
    spec = importlib.util.spec_from_file_location("vendor_web", ROOT / "scripts" / "vendor_web.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_served_table_is_what_setup_unpacks() -> None:
    unpacked = set(_vendor_script().FILES) | {"NOTICE.md"}
    assert set(vendor.VENDOR_FILES) <= unpacked
    assert vendor.VENDOR_FILES["face_mesh_solution_simd_wasm_bin.wasm"] == "application/wasm"
    assert vendor.VENDOR_FILES["face_mesh_solution_wasm_bin.wasm"] == "application/wasm"
    assert all(v.startswith("text/javascript") for k, v in vendor.VENDOR_FILES.items() if k.endswith(".js"))


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_landmarker_files_are_served_with_their_types(server: Server) -> None:
    if not vendor.landmarker_installed():
        pytest.skip("the in-browser landmarker is not vendored: run scripts/setup.sh (python scripts/vendor_web.py)")
    base = f"{server.base}/static/vendor/face_mesh/"
    status, headers, body = _get(base + "face_mesh_solution_simd_wasm_bin.wasm")
    assert status == 200 and headers["Content-Type"] == "application/wasm" and body[:4] == b"\0asm"
    assert headers["X-Content-Type-Options"] == "nosniff"
    status, headers, _ = _get(base + "face_mesh.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    for name in ("package.json", "..%2F..%2Fapp.js", "face_mesh.js.map", ".integrity"):
        assert _get(base + name)[0] == 404, name
    status, headers, _ = _get(f"{server.base}/")
    script_src = next(d for d in headers["Content-Security-Policy"].split(";") if d.strip().startswith("script-src"))
    assert "'unsafe-inline'" not in script_src and "'wasm-unsafe-eval'" in script_src
    status, _, body = _get(f"{server.base}/static/landmarks.js")
    assert status == 200 and b"enlivenLandmarks" in body


def _serve_args(*extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="enliven")
    add_serve_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["serve", *extra])


def test_landmarks_only_option() -> None:
    assert config_from_args(_serve_args()).landmarks_only is False
    assert config_from_args(_serve_args("--landmarks-only")).landmarks_only is True
    with pytest.raises(ValueError):
        ServerConfig(max_points_per_s=0)


def test_landmarks_only_refuses_to_start_without_the_landmarker(monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(vendor, "landmarker_installed", lambda: False)
    assert run_serve(_serve_args("--landmarks-only", "--port", "0")) == 2
    assert "scripts/setup.sh" in capsys.readouterr().err
