"""Vendor the in-browser face landmarker the page runs: npm ``@mediapipe/face_mesh`` at a pinned version.

The package carries MediaPipe FaceMesh's models (face detector, 478-point landmarks with attention, i.e.
irises) and its WebAssembly, with and without SIMD; ``enliven serve`` serves the files from
``enliven/web/vendor/face_mesh/`` (a fixed table, enliven/server/vendor.py), so the page loads nothing
from elsewhere. The tarball comes from ``npm pack`` (when npm is installed) or straight from the npm
registry, and is checked against the registry's sha512 integrity before anything is unpacked.
Idempotent: a second run with the files in place does nothing. Licence: Apache-2.0 (the package's
package.json); a NOTICE.md is written beside the files.

Usage: python scripts/vendor_web.py [--force]   (scripts/setup.sh runs it)
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

PACKAGE = "@mediapipe/face_mesh"
VERSION = "0.4.1633559619"  # 0.4.1657299874 (the newest) fails in Chromium: its face detector graph lacks num_classes
INTEGRITY = ("sha512-Vc8cdjxS5+O2gnjWH9KncYpUCVXT0h714KlWAsyqJvJbIgUJBqpppbIx8yWcAzBDxm/5cYSuBI5p5ySIPxzcEg==")
TARBALL_URL = f"https://registry.npmjs.org/{PACKAGE}/-/face_mesh-{VERSION}.tgz"
FILES = (  # what the page needs from the package (enliven/server/vendor.py serves exactly these)
    "face_mesh.js",
    "face_mesh.binarypb",
    "face_mesh_solution_packed_assets_loader.js",
    "face_mesh_solution_packed_assets.data",
    "face_mesh_solution_simd_wasm_bin.js",
    "face_mesh_solution_simd_wasm_bin.wasm",
    "face_mesh_solution_wasm_bin.js",
    "face_mesh_solution_wasm_bin.wasm",
    "package.json",
    "README.md",
)
ROOT = Path(__file__).resolve().parents[1]
DEST = ROOT / "enliven" / "web" / "vendor" / "face_mesh"
STAMP = DEST / ".integrity"


def _check(tarball: bytes) -> None:
    algorithm, _, expected = INTEGRITY.partition("-")
    got = base64.b64encode(hashlib.new(algorithm, tarball).digest()).decode()
    if got != expected:
        raise SystemExit(f"vendor_web: {PACKAGE}@{VERSION}: the tarball's {algorithm} is {got}, expected {expected}")


def _fetch() -> bytes:
    """The package's tarball: npm pack (uses npm's cache and settings) or the registry over https."""
    npm = shutil.which("npm")
    if npm is not None:
        with tempfile.TemporaryDirectory() as tmp:
            done = subprocess.run([npm, "pack", f"{PACKAGE}@{VERSION}", "--silent", "--pack-destination", tmp],
                                  capture_output=True, text=True, timeout=300)
            packed = list(Path(tmp).glob("*.tgz"))
            if done.returncode == 0 and len(packed) == 1:
                return packed[0].read_bytes()
            print(f"vendor_web: npm pack failed ({done.stderr.strip()[:200]}); trying the registry directly",
                  file=sys.stderr)
    with urllib.request.urlopen(TARBALL_URL, timeout=120) as r:  # noqa: S310 (a fixed https URL)
        return bytes(r.read())


def _unpack(tarball: bytes) -> None:
    tmp = DEST.with_name(DEST.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
        for name in FILES:
            member = tar.getmember(f"package/{name}")
            source = tar.extractfile(member)
            if not member.isfile() or source is None:
                raise SystemExit(f"vendor_web: package/{name} is not a file in the tarball")
            target = tmp / name
            target.write_bytes(source.read())
            target.chmod(0o644)
    (tmp / "NOTICE.md").write_text(
        f"# {PACKAGE} {VERSION}\n\n"
        f"Unpacked by scripts/vendor_web.py from {TARBALL_URL}\n(integrity {INTEGRITY}).\n\n"
        "MediaPipe FaceMesh for the web: its JavaScript, WebAssembly and models, by Google LLC,\n"
        "licensed under the Apache License, Version 2.0 (as its package.json states):\n"
        "https://www.apache.org/licenses/LICENSE-2.0\n")
    (tmp / STAMP.name).write_text(INTEGRITY + "\n")
    shutil.rmtree(DEST, ignore_errors=True)
    tmp.rename(DEST)


def up_to_date() -> bool:
    return STAMP.is_file() and STAMP.read_text().strip() == INTEGRITY and all((DEST / f).is_file() for f in FILES)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--force", action="store_true", help="fetch and unpack again even when up to date")
    args = p.parse_args(argv)
    if up_to_date() and not args.force:
        return 0
    print(f"enliven setup: vendoring {PACKAGE}@{VERSION} (the in-browser face landmarker, 17 MB)...", file=sys.stderr)
    try:
        tarball = _fetch()
    except OSError as e:
        print(f"vendor_web: cannot fetch {PACKAGE}@{VERSION}: {e}", file=sys.stderr)
        return 1
    _check(tarball)
    _unpack(tarball)
    return 0


if __name__ == "__main__":
    sys.exit(main())
