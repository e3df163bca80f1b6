"""Procedural driving motion: a built-in, synthetic talking head made from the canonical face.

Used when the CLI runs without a driving video, and as a test fixture. Written by us: no
research data goes into it beyond the canonical mean shape.

Expressions are smooth deformations of a shape in canonical units (see
``enliven.engine.canonical``: x right, y down, z away from the camera, interocular
distance 1, frontal). Each takes ``amount`` in [0, 1] (clipped), returns a new (478, 3)
float64 array and leaves the points of ``topology.RIGID`` exactly where they were, so a
rigid pose fit on them sees pure head motion. ``blink``, ``raise_brows`` and ``smile`` are
linear blendshapes (displacement = amount x the full displacement); ``jaw_open`` rotates
the jaw. The inner lips never cross: a lower inner-lip point never ends up above its
upper partner.

``pose_shape`` then places a canonical-frame shape into a camera image: rotation about
``canonical.HEAD_CENTER`` (yaw, pitch, roll in degrees, conventions in
``enliven.engine.canonical``: yaw > 0 turns the face to the subject's left = image right,
pitch > 0 nods down, roll > 0 is clockwise on screen), scaled by ``interocular_px`` and
projected orthographically, z kept in pixels (MediaPipe's convention: z = depth in the
same pixel units, smaller = closer).
"""
from __future__ import annotations

import functools
from typing import Literal

import numpy as np

from enliven.engine import topology
from enliven.engine.canonical import HEAD_CENTER, load_canonical, rotation_from_angles
from enliven.engine.errors import ShapeError

DURATION_S = 10.0  # length of builtin_motion
INTEROCULAR_FRACTION = 0.18  # builtin_motion's interocular distance / frame size
JAW_MAX_DEG = 26.0  # jaw rotation at jaw_open(amount=1): mouth_opening ~0.5
# Jaw hinge (the temporomandibular joints, in front of the ears), canonical units; axis along x.
JAW_PIVOT = np.array([0.0, 0.35, 1.0])

# Eye corners stay put in a blink; brows stay put in a blink and a smile.
_EYE_CORNERS = np.array([topology.RIGHT_EYE_OUTER, topology.RIGHT_EYE_INNER,
                         topology.LEFT_EYE_OUTER, topology.LEFT_EYE_INNER])
_BROWS = np.concatenate([topology.RIGHT_EYEBROW, topology.LEFT_EYEBROW])
_EYES = np.concatenate([topology.RIGHT_EYE, topology.LEFT_EYE])
_INNER_LIP_CORNERS = np.array([78, 308])


# ----------------------------------------------------------------------------- helpers


def _check_shape(shape: np.ndarray) -> np.ndarray:
    s = np.asarray(shape, dtype=np.float64)
    n = topology.NUM_LANDMARKS
    if s.shape != (n, 3):
        raise ShapeError(f"expected a canonical shape of shape ({n}, 3), got {s.shape}")
    if not np.isfinite(s).all():
        raise ShapeError("canonical shape has non-finite values")
    return s


def _amount(amount: float) -> float:
    a = float(amount)
    if not np.isfinite(a):
        raise ValueError(f"amount must be a finite number, got {amount!r}")
    return min(max(a, 0.0), 1.0)


def _wendland(r: np.ndarray) -> np.ndarray:
    """Wendland's C2 kernel, compactly supported on r < 1 and positive definite in 3-D."""
    q = np.clip(1.0 - r, 0.0, None)
    return q ** 4 * (4.0 * r + 1.0)


def _smooth_field(shape: np.ndarray, moved: np.ndarray, displacement: np.ndarray,
                  pinned: np.ndarray, radius: float) -> np.ndarray:
    """Smooth displacement field over all points: exact at ``moved`` and zero at ``pinned``.

    Radial-basis interpolation with a compact Wendland kernel of ``radius`` (canonical
    units): points farther than ``radius`` from every control point do not move.
    Args: shape (N, 3); moved (K,) indices with displacement (K, 3); pinned (M,) indices.
    Returns (N, 3) float64.
    """
    pinned = np.setdiff1d(pinned, moved)
    ctrl = np.concatenate([moved, pinned])
    values = np.concatenate([displacement, np.zeros((len(pinned), 3))])
    c = shape[ctrl]
    gram = _wendland(np.linalg.norm(c[:, None] - c[None], axis=2) / radius)
    coef = np.linalg.solve(gram + 1e-9 * np.eye(len(ctrl)), values)
    field = _wendland(np.linalg.norm(shape[:, None] - c[None], axis=2) / radius) @ coef
    field[ctrl] = values
    return field


def _uncross_inner_lips(shape: np.ndarray) -> np.ndarray:
    """Where a lower inner-lip point rose above its upper partner, meet them halfway (in y)."""
    up, lo = topology.LIPS_INNER_UPPER, topology.LIPS_INNER_LOWER
    crossed = shape[lo, 1] < shape[up, 1]
    if crossed.any():
        mid = 0.5 * (shape[lo[crossed], 1] + shape[up[crossed], 1])
        shape[up[crossed], 1] = mid
        shape[lo[crossed], 1] = mid
    return shape


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


# ----------------------------------------------------------------------------- expression fields


def _blink_field(shape: np.ndarray, side: str) -> np.ndarray:
    lids = {"right": [(topology.RIGHT_EYE_UPPER, topology.RIGHT_EYE_LOWER)],
            "left": [(topology.LEFT_EYE_UPPER, topology.LEFT_EYE_LOWER)]}
    pairs = lids["right"] + lids["left"] if side == "both" else lids[side]
    still = [] if side == "both" else lids["left" if side == "right" else "right"]
    moved, disp = [], []
    for upper, lower in pairs:
        gap = shape[lower] - shape[upper]
        moved += [upper, lower]
        disp += [0.8 * gap, -0.2 * gap]  # the lids meet at 80% of the way down
    pinned = np.concatenate([topology.RIGID, _EYE_CORNERS, _BROWS, *(i for pair in still for i in pair)])
    return _smooth_field(shape, np.concatenate(moved), np.concatenate(disp), pinned, radius=0.3)


def _brows_field(shape: np.ndarray) -> np.ndarray:
    # Up by 0.13 interocular distances at the tails, up to 0.18 at the heads (towards x = 0).
    heads = np.clip(1.0 - np.abs(shape[_BROWS, 0]) / 0.9, 0.0, 1.0)
    disp = np.zeros((len(_BROWS), 3))
    disp[:, 1] = -(0.13 + 0.06 * heads)
    disp[:, 2] = -0.01  # skin slides a little forward over the brow ridge
    return _smooth_field(shape, _BROWS, disp, np.concatenate([topology.RIGID, _EYES]), radius=0.5)


def _smile_field(shape: np.ndarray) -> np.ndarray:
    mirror = load_canonical().mirror
    # (point on the subject's right side, displacement); mirrored to the left side.
    right = [
        (61, (-0.085, -0.095, 0.03)),  # outer mouth corner: out, up and back
        (78, (-0.08, -0.09, 0.03)),  # inner mouth corner
        (57, (-0.06, -0.075, 0.02)),  # beside the corner
        (216, (-0.02, -0.05, -0.02)),  # cheek: up and forward
        (207, (-0.015, -0.04, -0.02)),
        (205, (-0.01, -0.03, -0.015)),
        (145, (0.0, -0.012, 0.0)),  # lower eyelid up a little (a Duchenne smile)
        (153, (0.0, -0.01, 0.0)),
        (144, (0.0, -0.01, 0.0)),
    ]
    idx = np.array([i for i, _ in right])
    disp = np.array([d for _, d in right])
    moved = np.concatenate([idx, mirror[idx], [0, 13, 14, 17]])
    disp = np.concatenate([disp, disp * np.array([-1.0, 1.0, 1.0]),
                           [(0.0, -0.012, 0.0), (0.0, -0.006, 0.0), (0.0, -0.006, 0.0), (0.0, 0.0, 0.0)]])
    pinned = np.concatenate([topology.RIGID, _BROWS, _EYE_CORNERS, topology.RIGHT_EYE_UPPER,
                             topology.LEFT_EYE_UPPER, [topology.CHIN]])
    return _smooth_field(shape, moved, disp, pinned, radius=0.45)


def _jaw_weights(shape: np.ndarray) -> np.ndarray:
    """How much each point follows the jaw: 1 for the lower lip, chin and jaw, 0 for the upper
    lip and everything above, smooth in between (widening towards the cheeks)."""
    up, lo = topology.LIPS_INNER_UPPER, topology.LIPS_INNER_LOWER
    inner = np.concatenate([up, lo, _INNER_LIP_CORNERS])
    order = np.argsort(shape[inner, 0])
    xs, ys = shape[inner, 0][order], shape[inner, 1][order]
    corner_x = float(np.abs(shape[_INNER_LIP_CORNERS, 0]).mean())
    line_y = np.interp(shape[:, 0], xs, ys)  # the mouth line, held flat beyond the corners
    width = 0.03 + 0.6 * np.clip(np.abs(shape[:, 0]) - corner_x, 0.0, None)
    w = _smoothstep(0.5 + (shape[:, 1] - line_y) / width)
    w[up] = 0.0
    w[lo] = 1.0
    w[_INNER_LIP_CORNERS] = 0.5
    w[topology.RIGID] = 0.0
    return w


# ----------------------------------------------------------------------------- public expressions


def blink(shape: np.ndarray, amount: float, *, side: Literal["both", "right", "left"] = "both") -> np.ndarray:
    """Close the eyes: each upper-lid point moves 80% of the way to its lower-lid partner
    and the lower lid 20% up, so at amount 1 the lids meet; the skin around follows smoothly.

    Args: shape (478, 3) float, canonical units; amount 0 (open) .. 1 (closed);
        side: which eye(s), the subject's own sides.
    Returns (478, 3) float64. Raises ShapeError for a bad shape, ValueError for a bad side.
    """
    s = _check_shape(shape)
    if side not in ("both", "right", "left"):
        raise ValueError(f"side must be 'both', 'right' or 'left', got {side!r}")
    return s + _amount(amount) * _blink_field(s, side)


def raise_brows(shape: np.ndarray, amount: float) -> np.ndarray:
    """Raise both brows by 0.13-0.18 interocular distances (inner ends more); the eye
    contours stay, the skin between follows.

    Args: shape (478, 3) float, canonical units; amount 0 .. 1. Returns (478, 3) float64.
    """
    s = _check_shape(shape)
    return s + _amount(amount) * _brows_field(s)


def smile(shape: np.ndarray, amount: float) -> np.ndarray:
    """A closed-mouth smile: mouth corners out, up and back, cheeks up, lower lids up a little.

    Args: shape (478, 3) float, canonical units; amount 0 .. 1. Returns (478, 3) float64.
    """
    s = _check_shape(shape)
    return _uncross_inner_lips(s + _amount(amount) * _smile_field(s))


def jaw_open(shape: np.ndarray, amount: float) -> np.ndarray:
    """Open the mouth by rotating the jaw about ``JAW_PIVOT`` (an axis along x near the ears).

    The lower lip, chin and jaw line turn by up to ``JAW_MAX_DEG``; the upper lip and the
    face above stay; the cheeks between follow partly. At amount 1, topology.mouth_opening
    is about 0.5 for the canonical face.
    Args: shape (478, 3) float, canonical units; amount 0 (closed) .. 1 (wide open).
    Returns (478, 3) float64.
    """
    s = _check_shape(shape)
    a = _amount(amount)
    if a == 0.0:
        return s.copy()
    angle = np.radians(JAW_MAX_DEG) * a * _jaw_weights(s)  # per point; > 0 opens (chin down and back)
    c, sn = np.cos(angle), np.sin(angle)
    rel = s - JAW_PIVOT
    out = s.copy()
    out[:, 1] = JAW_PIVOT[1] + c * rel[:, 1] - sn * rel[:, 2]
    out[:, 2] = JAW_PIVOT[2] + sn * rel[:, 1] + c * rel[:, 2]
    return _uncross_inner_lips(out)


def pose_shape(shape_canonical: np.ndarray, yaw_deg: float, pitch_deg: float, roll_deg: float,
               center_px: np.ndarray | tuple[float, float], interocular_px: float) -> np.ndarray:
    """Place a canonical-frame shape into an image.

    p_img = interocular_px * (R @ (p - HEAD_CENTER) + HEAD_CENTER) + (cx, cy, 0), with
    R = canonical.rotation_from_angles(yaw, pitch, roll): the head turns about
    canonical.HEAD_CENTER (behind the face, between the ears), and at zero rotation the
    canonical origin lands on ``center_px`` with the interocular distance ``interocular_px``.
    Orthographic: x, y are image pixels, z is depth in the same pixel units (smaller = closer).

    Args: shape_canonical (478, 3) float, canonical units; angles in degrees;
        center_px (2,) pixels; interocular_px > 0 pixels.
    Returns (478, 3) float64, pixels.
    Raises: ShapeError for a bad shape or centre, ValueError for a non-positive scale.
    """
    s = _check_shape(shape_canonical)
    centre = np.asarray(center_px, dtype=np.float64)
    if centre.shape != (2,) or not np.isfinite(centre).all():
        raise ShapeError(f"center_px must be 2 finite numbers, got {center_px!r}")
    scale = float(interocular_px)
    if not np.isfinite(scale) or scale <= 0.0:
        raise ValueError(f"interocular_px must be a positive number of pixels, got {interocular_px!r}")
    rot = rotation_from_angles(yaw_deg, pitch_deg, roll_deg)
    out = scale * ((s - HEAD_CENTER) @ rot.T + HEAD_CENTER)
    out[:, :2] += centre
    return out


def builtin_center_px(size_px: int) -> np.ndarray:
    """Where builtin_motion puts the canonical origin: the face (forehead to chin) centred.

    Returns (2,) float64 pixels: (size/2, size/2 - 0.5 * interocular_px).
    """
    return np.array([size_px / 2.0, size_px / 2.0 - 0.5 * INTEROCULAR_FRACTION * size_px])


# ----------------------------------------------------------------------------- the built-in sequence


def _ease(t: np.ndarray, keys: list[tuple[float, float]]) -> np.ndarray:
    """Piecewise smoothstep through (time_s, value) keys; zero velocity at each key, held outside."""
    times = np.array([k[0] for k in keys])
    values = np.array([k[1] for k in keys])
    i = np.clip(np.searchsorted(times, t, side="right") - 1, 0, len(keys) - 2)
    u = (t - times[i]) / (times[i + 1] - times[i])
    return values[i] + (values[i + 1] - values[i]) * _smoothstep(u)


def _blink_keys(start: float) -> list[tuple[float, float]]:
    return [(start, 0.0), (start + 0.09, 1.0), (start + 0.15, 1.0), (start + 0.33, 0.0)]


# The timeline, seconds -> value. Every channel is 0 at t = 0 and at the end.
_TIMELINE: dict[str, list[tuple[float, float]]] = {
    "yaw": [(0.0, 0.0), (0.5, 0.0), (1.3, 20.0), (1.6, 20.0), (2.8, -20.0), (3.1, -20.0), (3.8, 0.0), (10.0, 0.0)],
    "pitch": [(0.0, 0.0), (4.2, 0.0), (4.6, 12.0), (5.2, -12.0), (5.6, 0.0), (10.0, 0.0)],
    "roll": [(0.0, 0.0), (5.6, 0.0), (6.0, 8.0), (6.2, 8.0), (6.6, 0.0), (10.0, 0.0)],
    "blink": [(0.0, 0.0), *_blink_keys(3.85), *_blink_keys(7.25), (10.0, 0.0)],
    "brows": [(0.0, 0.0), (6.4, 0.0), (6.7, 1.0), (7.0, 1.0), (7.3, 0.0), (10.0, 0.0)],
    "smile": [(0.0, 0.0), (7.4, 0.0), (7.8, 1.0), (8.2, 1.0), (8.6, 0.0), (10.0, 0.0)],
    "jaw": [(0.0, 0.0), (8.0, 0.0), (8.22, 0.6), (8.45, 0.05), (8.67, 1.0), (8.9, 0.1), (9.12, 0.45),
            (9.35, 0.05), (9.57, 0.85), (9.8, 0.0), (10.0, 0.0)],
}


def builtin_timeline(fps: float = 25.0) -> dict[str, np.ndarray]:
    """The channels of builtin_motion per frame: yaw/pitch/roll in degrees, blink, brows,
    smile and jaw amounts in [0, 1]. Each (T,) float64, T = round(DURATION_S * fps)."""
    if not np.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    t = np.arange(int(round(DURATION_S * fps))) / float(fps)
    return {name: _ease(t, keys) for name, keys in _TIMELINE.items()}


@functools.lru_cache(maxsize=8)
def _builtin_motion(fps: float, size_px: int) -> np.ndarray:
    base = load_canonical().points
    fields = {"blink": _blink_field(base, "both"), "brows": _brows_field(base), "smile": _smile_field(base)}
    channels = builtin_timeline(fps)
    centre = builtin_center_px(size_px)
    iod_px = INTEROCULAR_FRACTION * size_px
    frames = np.empty((len(channels["yaw"]), topology.NUM_LANDMARKS, 3), np.float32)
    for k in range(len(frames)):
        shape = base.copy()
        for name, field in fields.items():
            if channels[name][k] > 0.0:
                shape += channels[name][k] * field
        shape = jaw_open(_uncross_inner_lips(shape), channels["jaw"][k])
        frames[k] = pose_shape(shape, channels["yaw"][k], channels["pitch"][k], channels["roll"][k], centre, iod_px)
    frames.setflags(write=False)
    return frames


def builtin_motion(fps: float = 25.0, size_px: int = 512) -> np.ndarray:
    """The built-in driving motion: a synthetic face that turns, nods, blinks, smiles and talks.

    About 10 s (T = round(10 * fps) frames) in a virtual size_px x size_px camera frame,
    the canonical face with interocular distance 0.18 * size_px, its origin at
    builtin_center_px(size_px). Frame 0 is the neutral frontal canonical face; then (seconds)
    0.5-3.8 head turn to yaw +20 (the subject's left), -20, back; 3.85 a blink; 4.2-5.6 a nod
    (pitch +12 down, -12 up); 5.6-6.6 a roll to +8; 6.4-7.3 raised brows; 7.25 a blink;
    7.4-8.6 a smile; 8.0-9.8 talking (the jaw opens four times by varying amounts); neutral
    again at the end. All channels move with smooth easing (no jumps); see builtin_timeline.

    Args: fps > 0 frames per second; size_px > 0 the frame size in pixels.
    Returns: (T, 478, 3) float32 landmarks in pixels (x right, y down, z depth in pixels,
        smaller = closer), MediaPipe point order. A fresh array on every call.
    """
    if not np.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    if int(size_px) != size_px or size_px <= 0:
        raise ValueError(f"size_px must be a positive integer, got {size_px!r}")
    return _builtin_motion(float(fps), int(size_px)).copy()
