"""`enliven verify` exit codes, and the C2PA manifest of a file `enliven animate` writes."""
from __future__ import annotations

import json

import numpy as np
import pytest

from enliven.cli import main
from enliven.engine.image_io import encode_png
from enliven.fixtures import demo_output_frames
from enliven.provenance.c2pa_sign import (TRAINED_ALGORITHMIC_MEDIA, ProvenanceError, _make_development_chain,
                                          read_manifest, resolve_identity)
from enliven.provenance.watermark import Watermarker


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ENLIVEN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ENLIVEN_C2PA_CERT", raising=False)
    monkeypatch.delenv("ENLIVEN_C2PA_KEY", raising=False)


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    return demo_output_frames(256, "crop", 1, start=120)[0]


def test_verify_exit_codes_on_images(tmp_path, frame, capsys):
    wm = Watermarker()
    marked, clean = tmp_path / "marked.png", tmp_path / "clean.png"
    marked.write_bytes(encode_png(wm.embed(frame)))
    clean.write_bytes(encode_png(frame))
    assert main(["verify", str(marked)]) == 0
    out = capsys.readouterr().out
    assert "FOUND" in out and wm.payload.session_hex in out and "C2PA: no manifest" in out
    assert main(["verify", str(clean)]) == 1
    assert "no enliven watermark" in capsys.readouterr().out


def test_verify_unreadable_input_is_one_line_exit_2(tmp_path, capsys):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    for path in (junk, broken, tmp_path / "missing.png", tmp_path):
        assert main(["verify", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("enliven: error:") and err.count("\n") == 1


@pytest.mark.slow
def test_animate_writes_a_watermarked_c2pa_signed_file(tmp_path, capsys):
    from enliven.animation.animator import AnimatorConfig
    from enliven.offline import animate_builtin

    out = tmp_path / "demo.mp4"
    animate_builtin(None, out, AnimatorConfig(engine="analytic", output="crop"), fps=5.0, progress=False)
    manifest = read_manifest(out)
    assert manifest.present and manifest.validation_state in ("Valid", "Trusted") and manifest.errors == ()
    assert manifest.ai_generated and manifest.generator and manifest.generator.startswith("enliven")
    assert "development" in (manifest.signer or "")
    # The manifest names the inputs by hash only: no thumbnail or other resource of the photo.
    import c2pa

    with c2pa.Reader(str(out)) as reader:
        store = json.loads(reader.json())
    active = store["manifests"][store["active_manifest"]]
    actions = [a for s in active["assertions"] if s["label"].startswith("c2pa.actions") for a in s["data"]["actions"]]
    assert any(a.get("digitalSourceType") == TRAINED_ALGORITHMIC_MEDIA for a in actions)
    assert [i["relationship"] for i in active["ingredients"]] == ["inputTo"]
    assert "sha256" in active["ingredients"][0]["title"] and "thumbnail" not in active["ingredients"][0]
    # ... and verify finds both the watermark (the same session) and the manifest.
    assert main(["verify", str(out)]) == 0
    text = capsys.readouterr().out
    assert "FOUND" in text and f"watermark session {manifest.watermark_session}" in text
    assert "AI-generated (trainedAlgorithmicMedia)" in text


def test_user_certificate_and_errors(tmp_path, monkeypatch):
    chain, key = _make_development_chain()
    (tmp_path / "chain.pem").write_bytes(chain)
    (tmp_path / "key.pem").write_bytes(key)
    identity = resolve_identity(tmp_path / "chain.pem", tmp_path / "key.pem")
    assert not identity.development and identity.algorithm == "es256"
    with pytest.raises(ProvenanceError, match="needs its key"):
        resolve_identity(tmp_path / "chain.pem", None)
    monkeypatch.setenv("ENLIVEN_C2PA_CERT", str(tmp_path / "chain.pem"))
    monkeypatch.setenv("ENLIVEN_C2PA_KEY", str(tmp_path / "key.pem"))
    assert not resolve_identity().development
    _, other_key = _make_development_chain()
    (tmp_path / "other.pem").write_bytes(other_key)
    with pytest.raises(ProvenanceError, match="does not belong"):
        resolve_identity(tmp_path / "chain.pem", tmp_path / "other.pem")
    with pytest.raises(ProvenanceError):
        resolve_identity(tmp_path / "missing.pem", tmp_path / "key.pem")


def test_development_identity_is_cached(tmp_path):
    first = resolve_identity()
    assert first.development and resolve_identity().cert_chain_pem == first.cert_chain_pem
    assert list((tmp_path / "cache" / "c2pa").glob("*.pem"))
