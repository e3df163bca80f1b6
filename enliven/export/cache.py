"""Exported graphs made on first use and cached, one folder per weights file, precision and batch.

The runtime asks for ``ensure_exported(weights, precision)``: the first call exports (about a
second, needs torch), checks the graphs against torch and publishes the folder atomically, so
concurrent server workers never see half-written files; later calls just return the paths.
The folder name holds the weights' sha256, so new weights never reuse stale graphs.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

from ..engine.contract import FRAME_PATH_CONTRACT, InputContract, recorded_holds
from ..engine.defaults import cache_root
from ..engine.errors import ModelFileError
from ..engine.refine import Precision
from ..models.shipped import check_sha256, sha256_file, shipped_file
from .compare import verify
from .graphs import OPSET, ExportedGenerator
from .to_onnx import export_generator

log = logging.getLogger(__name__)

FORMAT_VERSION = 1  # bump when the export changes in a way that old cached graphs must not be reused
STEM = "refiner"


def models_dir() -> Path:
    """Where exported graphs are cached: $ENLIVEN_CACHE/models (default ~/.cache/enliven/models)."""
    return cache_root() / "models"


def _read(folder: Path) -> ExportedGenerator | None:
    try:
        meta = json.loads((folder / "export.json").read_text())
        enc, dec = folder / f"{STEM}.encoder.onnx", folder / f"{STEM}.decoder.onnx"
        if enc.is_file() and dec.is_file():
            return ExportedGenerator(enc, dec, meta["resolution_px"], meta["code_dim"], meta["batch"],
                                     meta["precision"], meta["opset"])
    except (OSError, ValueError, KeyError):
        pass
    return None


def _checked_contract(folder: Path) -> dict | None:
    """The input contract a cached export was checked against (None: recorded by an older enliven)."""
    try:
        return json.loads((folder / "export.json").read_text()).get("contract")
    except (OSError, ValueError):
        return None


def atomic_dir(final: Path) -> Path:
    """A fresh temporary folder beside ``final`` (same file system, so a rename publishes it at once)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))


def export_dirs(final: Path) -> tuple[Path, Path]:
    """(final, tmp): where an export will live and the private folder to build it in (``publish`` moves it).

    When the model cache cannot be written (a read-only home), ``final`` is a private temporary folder instead.
    """
    try:
        return final, atomic_dir(final)
    except OSError as e:
        log.warning("cannot write the model cache %s (%s); exporting to a temporary folder", final.parent, e)
        final = Path(tempfile.mkdtemp(prefix="enliven-models-")) / final.name
        return final, atomic_dir(final)


def publish(tmp: Path, final: Path) -> None:
    """Move a finished folder into place; if another process won the race, keep theirs."""
    try:
        os.rename(tmp, final)
    except OSError:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        if not final.exists():
            raise


def ensure_exported(weights: Path | None = None, precision: Precision = "fp32",
                    batch: int | None = None, expected: InputContract = FRAME_PATH_CONTRACT,
                    generator: str | None = None) -> ExportedGenerator:
    """The exported graphs of ``weights`` (None: the shipped generator ``generator``, by default the default
    one), exporting them if needed.

    ``expected``: the input contract the frame path will feed (the weights must record it; a cached export
    records the contract it was checked against).
    Raises: ModelFileError when the weights are missing/corrupt, trained for another input contract, or the
    export fails its checks.
    """
    path = Path(weights) if weights is not None else shipped_file(generator, expected.warp_version)
    if not path.is_file():
        raise ModelFileError(f"weights file {path} is missing")
    digest = (sha256_file(path) if weights is not None else check_sha256(path))[:16]  # shipped: as their .sha256 says
    name = f"{path.stem}-{digest}-{precision}-{'dyn' if batch is None else f'b{batch}'}-op{OPSET}-v{FORMAT_VERSION}"
    root = models_dir()
    final = root / name
    found = _read(final)
    if found is not None:
        checked = _checked_contract(final)
        if (checked is None and expected == FRAME_PATH_CONTRACT) or (
                checked is not None and recorded_holds(checked, expected)):
            return found
        from ..models.generator import load_generator

        load_generator(path=path, expected=expected)  # raises unless the weights record ``expected``
        return found
    from ..models.generator import load_generator

    model = load_generator(path=path, expected=expected)
    final, tmp = export_dirs(final)
    try:
        exported = export_generator(model, tmp, batch=batch, precision=precision, stem=STEM)
        diffs = verify(model, exported)
        (tmp / "export.json").write_text(json.dumps({
            "weights": str(path), "sha256_16": digest, "resolution_px": exported.resolution_px,
            "code_dim": exported.code_dim, "batch": batch, "precision": precision, "opset": OPSET,
            "max_abs_diff_vs_torch": diffs, "contract": expected.to_dict()}, indent=1))
        log.info("exported %s (%s): max |onnx - torch| %s", path.name, precision, diffs)
        publish(tmp, final)
    except Exception as e:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, ModelFileError):
            raise
        raise ModelFileError(f"cannot export {path.name} to ONNX ({precision}): {e}") from e
    out = _read(final)
    if out is None:
        raise ModelFileError(f"exported graphs missing from {final}")
    return out
