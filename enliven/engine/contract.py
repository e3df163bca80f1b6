"""The input contract of a learned refiner: what the frame path must feed it for its weights to hold.

A refiner learns on crops framed, gated, warped and normalised one way; weights trained under
another framing or warp still load and run, but paint in the wrong places. So weights carry the
contract they were trained under (``enliven.models`` writes it into the weights file and checks it
on load), the way timm's pretrained configs carry their input size, mean and std.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from .compose import CROP_LIFT, CROP_SCALE
from .errors import ModelFileError
from .refine import FACE_GATE_BLUR, FACE_GATE_SCALE
from .render import DRAWING_VERSION
from .warp import WARP_VERSION

NORMALISATION = "rgb float32 NCHW in [0, 1]"  # images into the graphs; delta out in the same units


@dataclass(frozen=True)
class InputContract:
    crop_scale: float = CROP_SCALE  # crop side / face oval extent
    crop_lift: float = CROP_LIFT  # crop centre raised by this fraction of the side
    gate_scale: float = FACE_GATE_SCALE  # the refiner acts inside the face oval grown by this
    gate_blur: float = FACE_GATE_BLUR  # feather of that gate, fraction of the side
    warp_version: int = WARP_VERSION  # the analytic warp the refiner corrects
    drawing_version: int = DRAWING_VERSION  # the landmark drawing it reads
    normalisation: str = NORMALISATION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "InputContract":
        """Raises ValueError on unknown or missing fields (a contract is read whole or not at all)."""
        names = {f.name for f in fields(cls)}
        if set(data) != names:
            raise ValueError(f"contract fields {sorted(data)} differ from {sorted(names)}")
        return cls(**data)

    def differences(self, other: "InputContract") -> dict[str, tuple[Any, Any]]:
        """{field: (self's value, other's value)} for every field where the two differ."""
        mine, theirs = self.to_dict(), other.to_dict()
        return {k: (mine[k], theirs[k]) for k in mine if mine[k] != theirs[k]}


FRAME_PATH_CONTRACT = InputContract()  # what this version of the frame path feeds a refiner (default warp)

# Weights trained on an earlier warp that stay valid on a later one, measured: warp 6 is warp 5 plus the border
# release, which changes a refiner's input only where warp 5 folded the image against the crop's edge; the
# shipped refiners of warp 5 do better on warp 6 than on 5 (dev and val, benchmarks/QUALITY.md).
VALID_ON_LATER_WARPS: dict[int, tuple[int, ...]] = {5: (6,)}  # trained on -> also valid on


def holds(recorded: InputContract, expected: InputContract) -> bool:
    """Whether weights trained under ``recorded`` are valid for a frame path feeding ``expected``: the same
    contract, or one that differs only by a later warp they are valid on (VALID_ON_LATER_WARPS)."""
    diff = recorded.differences(expected)
    return not diff or (set(diff) == {"warp_version"}
                        and expected.warp_version in VALID_ON_LATER_WARPS.get(recorded.warp_version, ()))


def recorded_holds(recorded: dict, expected: InputContract) -> bool:
    """``holds`` for a contract as recorded (a dict, e.g. a cached export's); False when it cannot be read."""
    try:
        return holds(InputContract.from_dict(recorded), expected)
    except (TypeError, ValueError):
        return False


def contract_for(warp_version: int) -> InputContract:
    """The frame path's contract with the analytic warp of ``warp_version`` (``WarpConfig.version``)."""
    return InputContract(warp_version=warp_version)


def check_recorded(recorded: dict | None, expected: InputContract, path: Path | str) -> None:
    """Raise ModelFileError unless the weights' recorded contract holds for ``expected`` (``holds``)."""
    if recorded is None:
        raise ModelFileError(f"weights file {path} records no input contract (written by an older enliven): "
                             "re-save it with `enliven train --ship` from its run, or retrain")
    try:
        contract = InputContract.from_dict(recorded)
    except (TypeError, ValueError) as e:
        raise ModelFileError(f"weights file {path} has an unreadable input contract ({e})") from e
    if holds(contract, expected):
        return
    told = "; ".join(f"{k}: weights {a!r}, frame path {b!r}" for k, (a, b) in contract.differences(expected).items())
    raise ModelFileError(f"weights file {path} was trained for another input ({told}); "
                         "retrain it for this version of enliven")
