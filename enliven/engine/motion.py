"""Motion: head pose and expression of a face, and their relative transfer to the source face.

A face's landmarks P (478, 3) pixels are explained as a posed canonical shape:
P = s * X @ R.T + t, with X (478, 3) its pose-free shape in canonical units (interocular
distance 1, see canonical.py). The pose (R, t, s) is a similarity fitted on rigid points
(Umeyama); the expression is what is left in X. Motion is measured RELATIVE to the
driver's reference (neutral) frame, so the driver's face shape never leaks into the source.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import Enum

import numpy as np

from . import topology as topo
from .canonical import angles_from_rotation, load_canonical
from .errors import ShapeError


@dataclass(frozen=True)
class Pose:
    """Similarity that maps canonical units to image pixels: p = scale * R @ x + translation."""

    rotation: np.ndarray  # (3, 3) float64, canonical -> image
    translation: np.ndarray  # (3,) float64, pixels
    scale: float  # pixels per canonical unit (about the interocular distance in pixels)


def _check_points(points: np.ndarray, name: str = "points") -> None:
    if points.ndim != 2 or points.shape[0] != topo.NUM_LANDMARKS or points.shape[1] != 3:
        raise ShapeError(f"expected {name} of shape (478, 3); got {points.shape}")


def umeyama(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Least-squares similarity (R, t, s) with dst ~= s * src @ R.T + t (Umeyama 1991).

    Args: src, dst (K, D) float, K >= D; returns R (D, D) proper rotation, t (D,), s > 0.
    """
    if src.shape != dst.shape or src.ndim != 2 or src.shape[0] < src.shape[1]:
        raise ShapeError(f"expected two (K, D) arrays of the same shape with K >= D; got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.sum(axis=0) / len(src), dst.sum(axis=0) / len(dst)  # = .mean(axis=0), without its dispatch
    a, b = src - mu_s, dst - mu_d
    cov = b.T @ a / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(len(sig))
    if _det(u) * _det(vt) < 0:
        d[-1] = -1.0
    rot = (u * d) @ vt
    var_s = (a * a).sum() / len(src)
    scale = float((sig * d).sum() / max(var_s, 1e-12))
    return rot, mu_d - scale * rot @ mu_s, scale


def _det(m: np.ndarray) -> float:
    """det(m); of a 3x3 matrix in plain floats (np.linalg.det's dispatch costs ~10 us). Only its sign is used,
    of orthogonal matrices (|det| = 1), which no rounding flips."""
    if m.shape != (3, 3):
        return float(np.linalg.det(m))
    (a, b, c), (d, e, f), (g, h, i) = m.tolist()
    return a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g)


def fit_pose(points: np.ndarray, canonical: np.ndarray) -> Pose:
    """Pose of a face: similarity fit of the canonical rigid points to the observed ones.

    Args: points (478, 3) float, pixels; canonical (478, 3) float, canonical units.
    """
    _check_points(points)
    _check_points(canonical, "canonical")
    rot, t, s = umeyama(canonical[topo.RIGID].astype(np.float64), points[topo.RIGID].astype(np.float64))
    return Pose(rot, t, s)


def unpose(points: np.ndarray, pose: Pose) -> np.ndarray:
    """Pose-free shape X (478, 3) float64, canonical units, from landmarks (478, 3) pixels."""
    return (points.astype(np.float64) - pose.translation) @ pose.rotation / pose.scale


def apply_pose(shape: np.ndarray, pose: Pose) -> np.ndarray:
    """Landmarks (478, 3) float64 pixels from a pose-free shape (478, 3) canonical units."""
    return pose.scale * shape @ pose.rotation.T + pose.translation


def _rotvec(rotation: np.ndarray) -> np.ndarray:
    """Axis-angle vector (3,) of a rotation matrix."""
    cos = min(max((rotation[0, 0] + rotation[1, 1] + rotation[2, 2] - 1) / 2, -1.0), 1.0)  # np.clip of np.trace's
    angle = np.arccos(cos)
    if angle < 1e-8:
        return np.zeros(3)
    axis = np.array([rotation[2, 1] - rotation[1, 2], rotation[0, 2] - rotation[2, 0], rotation[1, 0] - rotation[0, 1]])
    return axis / (2 * np.sin(angle)) * angle


def _rotmat(rotvec: np.ndarray) -> np.ndarray:
    """Rotation matrix of an axis-angle vector (Rodrigues)."""
    angle = float(np.sqrt(rotvec.dot(rotvec)))  # = np.linalg.norm(rotvec), as it computes it
    if angle < 1e-12:
        return np.eye(3)
    k = rotvec / angle
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * kx @ kx


@dataclass(frozen=True)
class FaceState:
    """A face split into pose and pose-free shape."""

    pose: Pose
    shape: np.ndarray  # (478, 3) float64, canonical units

    @classmethod
    def measure(cls, points: np.ndarray, canonical: np.ndarray) -> "FaceState":
        pose = fit_pose(points, canonical)
        return cls(pose, unpose(points, pose))

    # Measures of the shape, computed once per state: a driver's reference and the source are read every frame.
    @functools.cached_property
    def gaze(self) -> np.ndarray:
        """topology.gaze of the shape: (2,) float64, eye widths."""
        return topo.gaze(self.shape)

    @functools.cached_property
    def eye_gazes(self) -> np.ndarray:
        """topology.eye_gazes of the shape: (2, 2) float64, eye widths."""
        return topo.eye_gazes(self.shape)

    @functools.cached_property
    def eye_opening(self) -> tuple[float, float]:
        """topology.eye_opening of the shape (right, left), interocular distances."""
        return topo.eye_opening(self.shape)

    @functools.cached_property
    def mouth_opening(self) -> float:
        """topology.mouth_opening of the shape, interocular distances."""
        return topo.mouth_opening(self.shape)


@dataclass(frozen=True)
class Motion:
    """What the driver did relative to its reference frame; zero motion is ``Motion.zero()``.

    Interpolating two Motions field by field is meaningful (used to ease in and out).
    """

    rotvec: np.ndarray  # (3,) axis-angle of R_now @ R_ref.T (image frame)
    log_scale: float  # log of the scale ratio now / reference
    shift: np.ndarray  # (3,) translation now - reference, in reference interocular units
    expression: np.ndarray  # (478, 3) pose-free shape now - reference, canonical units
    absolute_rotation: np.ndarray = field(default_factory=lambda: np.zeros(3))  # (3,) axis-angle of R_now
    gaze: np.ndarray = field(default_factory=lambda: np.zeros(2))  # (2,) topology.gaze now - reference, eye widths

    @classmethod
    def zero(cls) -> "Motion":
        return cls(np.zeros(3), 0.0, np.zeros(3), np.zeros((topo.NUM_LANDMARKS, 3)), np.zeros(3), np.zeros(2))

    def lerp(self, other: "Motion", w: float) -> "Motion":
        """(1 - w) * self + w * other, field by field."""
        mix = lambda a, b: a + w * (b - a)  # noqa: E731
        return Motion(mix(self.rotvec, other.rotvec), mix(self.log_scale, other.log_scale),
                      mix(self.shift, other.shift), mix(self.expression, other.expression),
                      mix(self.absolute_rotation, other.absolute_rotation), mix(self.gaze, other.gaze))


def measure_motion(now: FaceState, reference: FaceState) -> Motion:
    """Motion of the driver's face ``now`` relative to its ``reference`` frame."""
    rel = now.pose.rotation @ reference.pose.rotation.T
    return Motion(
        rotvec=_rotvec(rel),
        log_scale=float(np.log(now.pose.scale / reference.pose.scale)),
        shift=(now.pose.translation - reference.pose.translation) / reference.pose.scale,
        expression=now.shape - reference.shape,
        absolute_rotation=_rotvec(now.pose.rotation),
        gaze=now.gaze - reference.gaze,
    )


def gaze_reliability(now: FaceState, reference: FaceState) -> float:
    """How far the driver's measured gaze can be trusted now, 0..1, from how open its eyes are.

    MediaPipe's irises of closing eyes wander: below about half the reference's lid opening the gaze
    is not used (the caller holds the last trusted one), above two thirds fully.
    """
    ratio = sum(now.eye_opening) / max(sum(reference.eye_opening), 1e-6)
    w = min(max((ratio - 0.4) / 0.3, 0.0), 1.0)
    return w * w * (3 - 2 * w)


class TransferMode(str, Enum):
    RELATIVE = "relative"  # the head turns as much as the driver turned since its reference frame
    ABSOLUTE = "absolute"  # the head takes the driver's absolute orientation


# The most each gain may be: the head's own motion exaggerated further tears a 2-D warp of one photo
# sooner than an expression does.
GAIN_LIMITS: dict[str, float] = {"head_rotation": 1.5, "head_position": 1.5, "eyes": 2.0, "gaze": 2.0,
                                 "brows": 2.0, "mouth": 2.0}


@dataclass(frozen=True)
class MotionGains:
    """Per-channel strength of the transfer: 0 keeps the photo's own, 1 moves as the driver, more exaggerates.

    Each gain lies in [0, GAIN_LIMITS[name]] (head 1.5, expression channels 2.0). Expression points that
    belong to no channel (cheeks, nose, forehead) follow the channels around them, weighted by distance.
    """

    head_rotation: float = 1.0  # turn, nod and tilt of the head
    head_position: float = 1.0  # shift of the head and its size (leaning towards or away from the camera)
    eyes: float = 1.0  # eyelid opening: blinks, squints, wide eyes
    gaze: float = 1.0  # where the irises look, within the eye opening
    brows: float = 1.0  # brows and forehead
    mouth: float = 1.0  # lips, jaw and chin: speech and smiles

    def __post_init__(self) -> None:
        for name, limit in GAIN_LIMITS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"gain {name} must be a number from 0 to {limit:g}; got {value!r}")
            if not 0.0 <= value <= limit:
                raise ValueError(f"gain {name} must be from 0 to {limit:g}; got {value:g}")
            object.__setattr__(self, name, float(value))

    @classmethod
    def from_mapping(cls, values: Mapping[str, object], base: "MotionGains | None" = None) -> "MotionGains":
        """``base`` (default: all 1) with the gains named in ``values`` replaced.

        Raises: ValueError for an unknown name (the message lists the names) or a value out of range.
        """
        unknown = sorted(set(values) - set(GAIN_LIMITS))
        if unknown:
            raise ValueError(f"unknown gain {unknown[0]!r}; expected one of {', '.join(GAIN_LIMITS)}")
        return replace(base or cls(), **values)  # type: ignore[arg-type]

    def as_dict(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in GAIN_LIMITS}


class EyesMode(str, Enum):
    FOLLOW = "follow"  # the lids move as the driver's (times the eyes gain)
    OPEN = "open"  # the lids stay as in the photo
    AUTO_BLINK = "auto-blink"  # the lids stay as in the photo but blink at a natural rhythm (engine.blink)


@dataclass(frozen=True)
class MotionLimits:
    """How far the head may go from the photo's own pose, and exaggerated expressions from the neutral face.

    Beyond these a 2-D warp of one photo tears. Each limit is soft: motion passes unchanged up to
    ``knee`` times the limit, then bends smoothly towards the limit (a driver in profile turns the photo
    ~35 degrees, not 90, and the crop never flies off sideways). The expression limits act only on gains
    above 1 (an exaggerated smile grows, a mouth already wide open does not): the channel's offsets are
    scaled down as a whole, never below what gain 1 gives.
    """

    rotation_deg: float = 35.0  # angle of the head's rotation away from the photo's pose
    shift_iod: float = 1.0  # head translation, in the photo's interocular distances (each axis)
    log_scale: float = 0.35  # head size change, log of the ratio (+-0.35: x0.70 .. x1.42)
    gaze_x: float = 0.28  # irises' move from the photo's own place along the eye corners, in eye widths
    gaze_y: float = 0.12  # the same across the eye (up or down); the warp keeps the irises inside the opening
    # The largest move of any point of a channel at a gain above 1, interocular distances (canonical units):
    mouth_iod: float = 0.55  # a jaw wide open moves the chin ~0.5
    brows_iod: float = 0.25  # raised brows move ~0.18
    eyes_iod: float = 0.12  # wide-open lids; closing is bounded by the lids meeting
    knee: float = 0.7


def soft_limit(x: np.ndarray | float, limit: float, knee: float = 0.7) -> np.ndarray:
    """Identity up to ``knee * limit`` in magnitude, then a tanh bend that never exceeds ``limit``."""
    k = knee * limit
    if isinstance(x, float):  # one number (most callers): plain floats, the same operations, no array dispatch
        a = abs(x)
        return np.sign(x) * (a if a <= k else k + (limit - k) * float(np.tanh((a - k) / max(limit - k, 1e-9))))
    a = np.abs(np.asarray(x, np.float64))
    bent = k + (limit - k) * np.tanh((a - k) / max(limit - k, 1e-9))
    return np.sign(x) * np.where(a <= k, a, bent)


def limit_rotation(rotation: np.ndarray, limits: MotionLimits) -> np.ndarray:
    """A (3, 3) rotation with its angle softly limited to ``limits.rotation_deg`` (same axis)."""
    rv = _rotvec(rotation)
    angle = float(np.sqrt(rv.dot(rv)))  # = np.linalg.norm(rv)
    if angle < 1e-9:
        return rotation
    allowed = float(soft_limit(angle, np.radians(limits.rotation_deg), limits.knee))
    return _rotmat(rv * (allowed / angle))


# Expression channels and the points that are theirs outright; every other point (irises aside) follows them
# in proportion to exp(-(d / CHANNEL_REACH)^2), d its distance to each channel's points in the canonical face.
_JAW_LINE = np.array([136, 172, 58, 365, 397, 288])  # the face oval beside the chin, which opening jaws move
_CHANNEL_POINTS: dict[str, np.ndarray] = {
    "eyes": np.concatenate([topo.RIGHT_EYE, topo.LEFT_EYE]),
    "brows": np.concatenate([topo.RIGHT_EYEBROW, topo.LEFT_EYEBROW]),
    "mouth": np.unique(np.concatenate([topo.LIPS_OUTER, topo.LIPS_INNER, topo.MOUTH_SURROUND, _JAW_LINE])),
}
CHANNEL_REACH = 0.25  # canonical units (interocular distances)
_IRISES = np.concatenate([topo.RIGHT_IRIS, topo.LEFT_IRIS])


@functools.lru_cache(maxsize=1)
def channel_membership() -> np.ndarray:
    """(478, 3) float64: how much each point belongs to the eyes, brows and mouth channels (rows sum to 1;
    0 for the irises, which the gaze places)."""
    xy = load_canonical().points[:, :2]
    d2 = np.stack([((xy[:, None] - xy[idx][None]) ** 2).sum(-1).min(1) for idx in _CHANNEL_POINTS.values()], 1)
    m = np.exp(-(d2 - d2.min(1, keepdims=True)) / CHANNEL_REACH ** 2)
    m /= m.sum(1, keepdims=True)
    for k, idx in enumerate(_CHANNEL_POINTS.values()):
        m[idx] = np.eye(len(_CHANNEL_POINTS))[k]
    m[_IRISES] = 0.0
    m.setflags(write=False)
    return m


_LIP_POINTS = np.unique(np.concatenate([topo.LIPS_OUTER, topo.LIPS_INNER]))


def place_irises(shape: np.ndarray, source: np.ndarray, gaze: np.ndarray,
                 limits: MotionLimits | None = None, source_gazes: np.ndarray | None = None) -> np.ndarray:
    """``shape`` with its irises moved to look like the source's irises plus ``gaze``.

    Each eye's iris (5 points, as a disc) goes to the source's own place in its eye (topology.eye_gazes)
    offset by ``gaze`` (2,) eye widths, in the eye frame of ``shape``, so lids and gaze stay independent.
    ``limits`` softly bound the offset (the warp then keeps each iris inside its eye opening). Args: shape, source (478, 3) canonical units;
    source_gazes: topology.eye_gazes(source) when already known.
    """
    out = shape.copy()
    own = topo.eye_gazes(source) if source_gazes is None else source_gazes
    if limits is not None:
        gaze = [float(soft_limit(gaze[0], limits.gaze_x, limits.knee)),
                float(soft_limit(gaze[1], limits.gaze_y, limits.knee))]
    for k, ((mid, axis, down, width), iris, contour) in enumerate(zip(
            topo.eye_frames(shape), (topo.RIGHT_IRIS, topo.LEFT_IRIS), (topo.RIGHT_EYE, topo.LEFT_EYE),
            strict=True)):
        g = own[k] + gaze
        centre = mid + width * (g[0] * axis + g[1] * down)
        out[iris, :2] = source[iris, :2] - source[iris[0], :2] + centre
        out[iris, 2] = source[iris, 2] + (shape[contour, 2] - source[contour, 2]).mean()
    return out


# Smallest gap (canonical units, i.e. fractions of the interocular distance) kept between paired
# lip and eyelid points: a closed mouth or eye still has its two contours apart, so the warp
# never has to send one output point to two source points (which folds the spline).
MIN_LIP_GAP = 0.02
MIN_LID_GAP = 0.03


def clamp_closures(shape: np.ndarray, source: np.ndarray | None = None, min_lip_gap: float = MIN_LIP_GAP,
                   min_lid_gap: float = MIN_LID_GAP) -> np.ndarray:
    """Keep lower lip below upper lip and lower lids below upper lids (pose-free shape, y down).

    Where a pair comes closer than its minimum gap (or crosses), both points move apart
    symmetrically about their mean. The minimum never exceeds the gap the ``source`` shape
    has itself, so the source's own closed mouth stays closed at zero motion.
    Args: shape, source (478, 3) canonical units. Returns (478, 3).
    """
    out = shape.copy()
    for upper, lower, min_gap in ((topo.LIPS_INNER_UPPER, topo.LIPS_INNER_LOWER, min_lip_gap),
                                  (topo.RIGHT_EYE_UPPER, topo.RIGHT_EYE_LOWER, min_lid_gap),
                                  (topo.LEFT_EYE_UPPER, topo.LEFT_EYE_LOWER, min_lid_gap)):
        floor = np.full(len(upper), min_gap)
        if source is not None:
            floor = np.clip(source[lower, 1] - source[upper, 1], 0.0, min_gap)
        gap = out[lower, 1] - out[upper, 1]
        close = gap < floor
        if np.any(close):
            mid = (out[lower[close], 1] + out[upper[close], 1]) / 2
            out[upper[close], 1] = mid - floor[close] / 2
            out[lower[close], 1] = mid + floor[close] / 2
    return out


def _eye_gains(source: np.ndarray, offsets: np.ndarray, gain: float) -> np.ndarray:
    """(478, 1) gain of the eyes channel per point: ``gain``, except that above 1 it never closes a lid past shut.

    Exaggeration means wider-open eyes and quicker squints, not lids pushed through each other: for
    an eye that closes, a gain above 1 stops (not below 1) where the source's lids would meet.
    Args: source (478, 3) the source's pose-free shape; offsets (478, 3) the eyes channel's offsets.
    """
    out = np.full((topo.NUM_LANDMARKS, 1), gain)
    if gain <= 1.0:
        return out
    for upper, lower, side in ((topo.RIGHT_EYE_UPPER, topo.RIGHT_EYE_LOWER, source[:, 0] < 0),
                               (topo.LEFT_EYE_UPPER, topo.LEFT_EYE_LOWER, source[:, 0] >= 0)):
        closing = float((offsets[upper, 1] - offsets[lower, 1]).mean())  # > 0: the lids come together
        gap = float((source[lower, 1] - source[upper, 1]).mean())
        if closing > 1e-9:
            out[side] = max(min(gain, gap / closing), 1.0)
    return out


def _bounded_gain(gain: float, offsets: np.ndarray, channel: str, limits: MotionLimits | None) -> float:
    """``gain``, bent above 1 so that no point of ``channel`` moves further than its limit (``limits.<channel>_iod``;
    soft, never below 1). Args: offsets (478, 3) the channel's expression offsets, canonical units.
    """
    if gain <= 1.0 or limits is None:
        return gain
    limit = float(getattr(limits, f"{channel}_iod"))
    amount = float(np.linalg.norm(offsets[_CHANNEL_POINTS[channel], :2], axis=1).max())
    if amount < 1e-9:
        return gain
    return max(float(soft_limit(gain * amount, limit, limits.knee)) / amount, 1.0)


def retarget(source: FaceState, motion: Motion, mode: TransferMode = TransferMode.RELATIVE,
             gains: MotionGains = MotionGains(), limits: MotionLimits | None = MotionLimits(),
             eye_offsets: np.ndarray | None = None) -> np.ndarray:
    """Driven landmarks (478, 3) float64, in the source's pixels: the source face moved as the driver.

    Relative mode: R' = R_rel @ R_src, t' = t_src + shift * s_src, s' = s_src * exp(log_scale).
    Absolute mode: R' = R_driver (the driver's own orientation), position and scale as relative.
    Each channel is scaled by its gain: the rotation away from the photo's pose by ``head_rotation``,
    shift and scale by ``head_position``, the expression offsets by the eyes, brows and mouth gains
    (channel_membership), the gaze by ``gaze``. The expression offsets are always relative (absolute
    offsets would copy the driver's shape). ``limits`` (None: none) softly bound how far the head goes
    from the photo's pose, the irises from the eye's middle and exaggerated expressions from neutral.
    ``eye_offsets`` (478, 3) canonical units: what the eyes channel shows instead of the driver's lids
    (zeros: the photo's own eyes; a blink).
    """
    if mode is TransferMode.ABSOLUTE:
        rel = _rotmat(gains.head_rotation * _rotvec(_rotmat(motion.absolute_rotation) @ source.pose.rotation.T))
    else:
        rel = _rotmat(gains.head_rotation * motion.rotvec)
    log_scale, shift = gains.head_position * motion.log_scale, gains.head_position * motion.shift
    if limits is not None:
        rel = limit_rotation(rel, limits)
        log_scale = float(soft_limit(log_scale, limits.log_scale, limits.knee))
        shift = soft_limit(shift, limits.shift_iod, limits.knee)
    rotation = rel @ source.pose.rotation
    scale = source.pose.scale * float(np.exp(log_scale))
    translation = source.pose.translation + shift * source.pose.scale
    m = channel_membership()
    eyes = motion.expression if eye_offsets is None else eye_offsets
    brows = _bounded_gain(gains.brows, motion.expression, "brows", limits)
    mouth = _bounded_gain(gains.mouth, motion.expression, "mouth", limits)
    eye_gain = np.minimum(_eye_gains(source.shape, eyes, gains.eyes), _bounded_gain(gains.eyes, eyes, "eyes", limits))
    offsets = (m[:, 1:2] * brows + m[:, 2:3] * mouth) * motion.expression + m[:, 0:1] * eye_gain * eyes
    shape = clamp_closures(source.shape + offsets, source.shape)
    shape = place_irises(shape, source.shape, gains.gaze * motion.gaze, limits, source.eye_gazes)
    return apply_pose(shape, Pose(rotation, translation, scale))


# Points whose reference is refreshed when the driver shows a more closed mouth than its reference.
_MOUTH_REGION = np.unique(np.concatenate([_LIP_POINTS, topo.MOUTH_SURROUND]))


@dataclass
class DriverReference:
    """The driver's reference (neutral) frame, chosen automatically and refreshed per region.

    For ``calibration_s`` after the first tracked frame, the most neutral frame seen (closed
    mouth, open eyes, facing the camera) becomes the reference. Afterwards, a frame whose mouth
    is more closed (or whose eyes are more open) than the reference's replaces only that region
    of the reference: at that moment the output already shows the clamped closed mouth, so the
    switch is invisible, and a reference taken mid-word can no longer invert mouth motion.
    (Eyes are not refreshed that way: wide-open eyes are an expression to transfer.)
    """

    canonical: np.ndarray  # (478, 3) canonical face
    calibration_s: float = 1.0
    state: FaceState | None = None
    _start_t: float | None = None
    _score: float = float("inf")

    def reset(self) -> None:
        self.state, self._start_t, self._score = None, None, float("inf")

    @staticmethod
    def _neutrality(face: FaceState) -> float:
        yaw, pitch, roll = angles_from_rotation(face.pose.rotation)
        eyes = sum(face.eye_opening)
        return face.mouth_opening - 0.5 * eyes + 0.01 * (abs(yaw) + abs(pitch) + abs(roll))

    def update(self, face: FaceState, t: float) -> FaceState:
        """Feed a tracked driver face at time t (s); returns the reference to measure it against."""
        if self.state is None or self._start_t is None:
            self.state, self._start_t, self._score = face, t, self._neutrality(face)
            return self.state
        if t - self._start_t <= self.calibration_s:
            score = self._neutrality(face)
            if score < self._score:
                self.state, self._score = face, score
            return self.state
        if face.mouth_opening < self.state.mouth_opening - 0.01:
            shape = self.state.shape.copy()
            shape[_MOUTH_REGION] = face.shape[_MOUTH_REGION]
            self.state = replace(self.state, shape=shape)
        return self.state
