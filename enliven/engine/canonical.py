"""The canonical face and the head-pose conventions of its frame of reference.

The canonical face is a mean, neutral, frontal, exactly left/right-symmetric 478-point
MediaPipe shape, built from real neutral frames by ``scripts/build_canonical_face.py``
(see ``assets/canonical_face.md``). Its frame of reference ("canonical units"):

- origin at the mean of ``topology.RIGID``;
- x to the image right (from the subject's right eye to their left eye), y down,
  z away from the camera (MediaPipe's convention: smaller z = closer). This is a
  right-handed frame;
- interocular distance (``topology.interocular_distance``) exactly 1.0;
- symmetric about the plane x = 0, eye line along x, face looking along -z.

Head rotation angles, in degrees, for a face seen by the camera (the same axes as above):

- yaw > 0: the subject turns to their own left, so the nose moves to the image right (+x);
- pitch > 0: the subject nods down (looks down), so the nose moves down in the image (+y);
- roll > 0: the face turns clockwise on screen, so the top of the head moves to the image
  right: the head tilts towards the subject's left shoulder;
- composed as R = R_yaw @ R_pitch @ R_roll acting on column vectors (roll first, then
  pitch, then yaw about the camera's axes; the usual intrinsic yaw-pitch-roll order).
"""
from __future__ import annotations

import functools
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from enliven.engine import topology
from enliven.engine.errors import ModelFileError, ShapeError

CANONICAL_FACE_PATH = Path(__file__).resolve().parent / "assets" / "canonical_face.npz"

# Approximate centre of head rotation (the top of the neck, between the ears), canonical units.
HEAD_CENTER = np.array([0.0, 0.45, 1.4])


@dataclass(frozen=True)
class CanonicalFace:
    points: np.ndarray  # (478, 3) float64, canonical units, read-only
    mirror: np.ndarray  # (478,) int64, point i's mirror image is point mirror[i]; read-only


@functools.lru_cache(maxsize=4)
def load_canonical(path: str | Path | None = None) -> CanonicalFace:
    """Load (once, then cached) the canonical face shipped in ``assets/canonical_face.npz``.

    Args: path: another file of the same format, for tests; None for the shipped one.
    Returns: a CanonicalFace whose arrays are read-only (copy them to modify).
    Raises: ModelFileError if the file is missing, unreadable or not a valid canonical face.
    """
    file = Path(path) if path is not None else CANONICAL_FACE_PATH
    remedy = "reinstall enliven or rebuild it with scripts/build_canonical_face.py"
    try:
        with np.load(file, allow_pickle=False) as data:
            points = np.asarray(data["points"], dtype=np.float64)
            mirror = np.asarray(data["mirror"], dtype=np.int64)
    except FileNotFoundError as e:
        raise ModelFileError(f"canonical face file not found: {file}; {remedy}") from e
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise ModelFileError(f"canonical face file {file} is unreadable ({e}); {remedy}") from e
    n = topology.NUM_LANDMARKS
    if points.shape != (n, 3) or not np.isfinite(points).all():
        raise ModelFileError(f"canonical face file {file}: expected finite points of shape ({n}, 3), "
                             f"got {points.shape}; {remedy}")
    if (mirror.shape != (n,) or not np.array_equal(np.sort(mirror), np.arange(n))
            or not np.array_equal(mirror[mirror], np.arange(n))):
        raise ModelFileError(f"canonical face file {file}: 'mirror' is not a self-inverse permutation "
                             f"of {n} points; {remedy}")
    points.setflags(write=False)
    mirror.setflags(write=False)
    return CanonicalFace(points=points, mirror=mirror)


def rotation_from_angles(yaw_deg: float, pitch_deg: float, roll_deg: float) -> np.ndarray:
    """Head rotation matrix from yaw, pitch and roll in degrees (conventions in the module doc).

    Returns (3, 3) float64, acting on column vectors in canonical/image axes.
    """
    y, p, r = np.radians([yaw_deg, pitch_deg, roll_deg])
    cy, sy, cp, sp, cr, sr = np.cos(y), np.sin(y), np.cos(p), np.sin(p), np.cos(r), np.sin(r)
    r_yaw = np.array([[cy, 0.0, -sy], [0.0, 1.0, 0.0], [sy, 0.0, cy]])
    r_pitch = np.array([[1.0, 0.0, 0.0], [0.0, cp, -sp], [0.0, sp, cp]])
    r_roll = np.array([[cr, -sr, 0.0], [sr, cr, 0.0], [0.0, 0.0, 1.0]])
    return r_yaw @ r_pitch @ r_roll


def angles_from_rotation(rotation: np.ndarray) -> tuple[float, float, float]:
    """Inverse of rotation_from_angles: (yaw, pitch, roll) in degrees, pitch within +-90.

    Args: rotation (3, 3) float, a proper rotation.
    Raises: ShapeError if the shape is not (3, 3).
    """
    m = np.asarray(rotation, dtype=np.float64)
    if m.shape != (3, 3):
        raise ShapeError(f"expected a (3, 3) rotation matrix, got shape {m.shape}")
    yaw = np.arctan2(-m[0, 2], m[2, 2])
    pitch = np.arcsin(np.clip(-m[1, 2], -1.0, 1.0))
    roll = np.arctan2(m[1, 0], m[1, 1])
    return float(np.degrees(yaw)), float(np.degrees(pitch)), float(np.degrees(roll))
