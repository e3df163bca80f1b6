"""The weights files shipped in the package, found and checked without torch.

A server's inference workers open the exported graphs from the model cache: finding the shipped weights'
file and its digest is all they need of this package, and importing torch for it would cost each worker
~190 MB and a second (measured on the 2-core EPYC). ``generator.py`` builds its registry from this table.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import NamedTuple

from ..engine.choices import DEFAULT_REFINER
from ..engine.contract import VALID_ON_LATER_WARPS
from ..engine.errors import ModelFileError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_GENERATOR = DEFAULT_REFINER


class ShippedWeights(NamedTuple):
    """The files of one generator in WEIGHTS_DIR (each with ``<stem>.sha256`` beside it)."""

    file: str  # the default file: trained behind ``warp``, valid on the default warp
    warp: int  # the warp version the default file was trained on
    by_warp: tuple[tuple[int, str], ...] = ()  # (warp version, file) for the other warps it ships for


SHIPPED: dict[str, ShippedWeights] = {
    # step 7328, trained on warp 5 (valid on 6, the default); 4: step 7228, squashing lids
    "refiner128": ShippedWeights("refiner128.pt", 5, ((4, "refiner128_warp4.pt"),)),
    # the distilled student of refiner128.pt; on the squashing warp, step 7228 (no student was made for it)
    "refiner128s": ShippedWeights("refiner128s.pt", 5, ((4, "refiner128_warp4.pt"),)),
    "patch-eye64": ShippedWeights("patch_eye64.pt", 5, ((4, "patch_eye64_warp4.pt"),)),  # 4: behind step 7228
}


def shipped_warps(name: str | None = None) -> frozenset[int]:
    """The analytic warp versions generator ``name`` (default: the default one) ships weights valid on: each
    file's own warp and the later warps it holds for (``contract.VALID_ON_LATER_WARPS``)."""
    entry = SHIPPED.get(name or DEFAULT_GENERATOR)
    if entry is None:
        return frozenset()
    trained = {entry.warp, *dict(entry.by_warp)}
    return frozenset(trained.union(*(VALID_ON_LATER_WARPS.get(v, ()) for v in trained)))


def shipped_file(name: str | None = None, warp_version: int | None = None) -> Path:
    """The shipped weights of generator ``name`` (default: the default one) trained on ``warp_version`` where
    it ships some for it, else its default ones. Raises ModelFileError when ``name`` ships none."""
    entry = SHIPPED.get(name or DEFAULT_GENERATOR)
    if entry is None:
        raise ModelFileError(f"generator {name!r} has no shipped weights")
    return WEIGHTS_DIR / dict(entry.by_warp).get(warp_version, entry.file)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_sha256(path: Path) -> str:
    """The sha256 of shipped weights (hex), read once; raises ModelFileError when they are missing or do not
    match their ``.sha256`` file."""
    if not path.exists():
        raise ModelFileError(f"weights file {path} is missing: reinstall enliven")
    digest = sha256_file(path)
    digest_file = path.with_suffix(".sha256")
    if digest_file.exists() and digest != digest_file.read_text().split()[0]:
        raise ModelFileError(f"weights file {path} does not match its sha256 ({digest_file.name}): "
                             "reinstall enliven")
    return digest
