"""The page's vendored face landmarker: npm ``@mediapipe/face_mesh`` (scripts/vendor_web.py unpacks it into
enliven/web/vendor/face_mesh/ at setup), served as ``/static/vendor/face_mesh/<name>``.

A fixed table of names, so a request can never name another path on disk; each with its content type
(browsers compile WebAssembly while it streams only when it comes as ``application/wasm``). Without the
files (setup could not fetch them) every name answers 404 and the page sends camera video instead.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from aiohttp import web

from .http_guards import HttpError

_JS = "text/javascript; charset=utf-8"
_BINARY = "application/octet-stream"
VENDOR_FILES = {  # name -> content type
    "face_mesh.js": _JS,
    "face_mesh.binarypb": _BINARY,  # the MediaPipe graph
    "face_mesh_solution_packed_assets_loader.js": _JS,
    "face_mesh_solution_packed_assets.data": _BINARY,  # the models
    "face_mesh_solution_simd_wasm_bin.js": _JS,
    "face_mesh_solution_simd_wasm_bin.wasm": "application/wasm",
    "face_mesh_solution_wasm_bin.js": _JS,
    "face_mesh_solution_wasm_bin.wasm": "application/wasm",
    "NOTICE.md": "text/markdown; charset=utf-8",
}


def vendor_dir() -> Path:
    return Path(str(resources.files("enliven.web"))) / "vendor" / "face_mesh"


def landmarker_installed() -> bool:
    """Whether setup unpacked the landmarker (every file of the table is there)."""
    folder = vendor_dir()
    return all((folder / name).is_file() for name in VENDOR_FILES)


async def vendor_file(request: web.Request) -> web.StreamResponse:
    """GET /static/vendor/face_mesh/{name}: one file of the table; revalidated by Last-Modified (17 MB)."""
    name = request.match_info["name"]
    ctype = VENDOR_FILES.get(name)
    path = vendor_dir() / name
    if ctype is None or not path.is_file():
        raise HttpError(404, "not_found", "no such file (the in-browser landmarker is installed by scripts/setup.sh)")
    return web.FileResponse(path, headers={"Content-Type": ctype, "Cache-Control": "no-cache"})
