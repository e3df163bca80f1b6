"""What an export produces: the paths of the two graphs and what they were exported as."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..engine.errors import EnlivenError
from ..engine.refine import Precision

OPSET = 17  # the ONNX opset enliven exports (older ones are refused)


class ExportError(EnlivenError):
    """The export or its checks failed (a bug or an unsupported setting, not the user's input)."""


@dataclass(frozen=True)
class ExportedGenerator:
    """Paths of an exported refiner and what it was exported as."""

    encoder: Path
    decoder: Path
    resolution_px: int
    code_dim: int
    batch: int | None  # None: dynamic batch axis
    precision: Precision
    opset: int = OPSET
