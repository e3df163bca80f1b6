"""The built-in procedural driving motion and its expression and pose functions."""
from __future__ import annotations

import numpy as np
import pytest

from enliven.engine import procedural, topology
from enliven.engine.canonical import angles_from_rotation, load_canonical
from enliven.engine.errors import ShapeError

FPS, SIZE = 25.0, 512
IOD_PX = procedural.INTEROCULAR_FRACTION * SIZE
FLIP_X = np.array([-1.0, 1.0, 1.0])


def _fit(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """Umeyama similarity: dst ~ s * R @ src + t. Returns R (3, 3), s, t (3,)."""
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    a, b = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(b.T @ a / len(a))
    d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    rot = u @ d @ vt
    s = float(np.trace(np.diag(sig) @ d) / (a ** 2).sum(axis=1).mean())
    return rot, s, mu_d - s * rot @ mu_s


def _to_canonical(frame: np.ndarray) -> np.ndarray:
    """Undo a frame's head pose (fitted on the rigid points) to get back canonical units."""
    canon = load_canonical().points
    rot, s, t = _fit(canon[topology.RIGID], frame[topology.RIGID].astype(np.float64))
    return (frame - t) @ rot / s


@pytest.fixture(scope="module")
def motion() -> np.ndarray:
    return procedural.builtin_motion(FPS, SIZE)


@pytest.fixture(scope="module")
def canon() -> np.ndarray:
    return load_canonical().points


def _runs(mask: np.ndarray) -> int:
    """Number of separate runs of True."""
    return int(np.sum(np.diff(mask.astype(int), prepend=0) == 1))


# ----------------------------------------------------------------------------- builtin_motion


def test_shape_dtype_and_length(motion: np.ndarray) -> None:
    assert motion.shape == (250, topology.NUM_LANDMARKS, 3) and motion.dtype == np.float32
    assert np.isfinite(motion).all()
    assert procedural.builtin_motion(30.0, 256).shape == (300, topology.NUM_LANDMARKS, 3)


def test_returns_a_fresh_array() -> None:
    a = procedural.builtin_motion(FPS, SIZE)
    a[:] = 0.0
    assert procedural.builtin_motion(FPS, SIZE).any()


def test_frame_zero_is_posed_canonical(motion: np.ndarray, canon: np.ndarray) -> None:
    expected = procedural.pose_shape(canon, 0.0, 0.0, 0.0, procedural.builtin_center_px(SIZE), IOD_PX)
    np.testing.assert_allclose(motion[0], expected, atol=1e-3)
    assert topology.interocular_distance(motion[0]) == pytest.approx(IOD_PX, rel=1e-5)
    # The face sits inside the frame, centred horizontally.
    assert motion[0, :, :2].min() > 0.1 * SIZE and motion[0, :, :2].max() < 0.9 * SIZE
    assert motion[0, topology.NOSE_TIP, 0] == pytest.approx(SIZE / 2, abs=1e-3)


def test_returns_to_neutral(motion: np.ndarray) -> None:
    np.testing.assert_allclose(motion[-1], motion[0], atol=1e-2)


def test_scales_with_size(motion: np.ndarray) -> None:
    small = procedural.builtin_motion(FPS, 256)
    np.testing.assert_allclose(small, motion / 2, atol=1e-3)


def test_two_blinks(motion: np.ndarray) -> None:
    eyes = np.array([topology.eye_opening(f) for f in motion])
    closed = (eyes < 0.3 * eyes[0]).all(axis=1)
    assert _runs(closed) == 2
    assert closed.sum() < 0.1 * len(motion)  # blinks are short


def test_talking_opens_the_mouth(motion: np.ndarray) -> None:
    mouth = np.array([topology.mouth_opening(f) for f in motion])
    assert mouth[0] < 0.03
    assert mouth.max() > 0.35
    assert 3 <= _runs(mouth > 0.15) <= 5  # the jaw opens and closes several times


def test_head_turns_nods_and_rolls(motion: np.ndarray, canon: np.ndarray) -> None:
    angles = np.array([angles_from_rotation(_fit(canon[topology.RIGID], f[topology.RIGID])[0]) for f in motion])
    yaw, pitch, roll = angles.T
    assert yaw.max() > 15.0 and yaw.min() < -15.0
    assert yaw.argmax() < yaw.argmin()  # the subject's left first
    assert pitch.max() > 9.0 and pitch.min() < -9.0
    assert np.abs(roll).max() > 5.0
    np.testing.assert_allclose(angles[0], 0.0, atol=1e-3)


def test_smooth(motion: np.ndarray) -> None:
    step = np.linalg.norm(np.diff(motion, axis=0), axis=2).max(axis=1)
    assert step.max() < 0.25 * IOD_PX  # no point jumps more than a quarter interocular distance a frame
    jerk = np.linalg.norm(np.diff(motion, n=2, axis=0), axis=2).max(axis=1)
    assert jerk.max() < 0.15 * IOD_PX


def test_inner_lips_never_cross(motion: np.ndarray) -> None:
    for frame in motion:
        c = _to_canonical(frame.astype(np.float64))
        gap = c[topology.LIPS_INNER_LOWER, 1] - c[topology.LIPS_INNER_UPPER, 1]
        assert gap.min() > -1e-4


def test_builtin_timeline(motion: np.ndarray) -> None:
    tl = procedural.builtin_timeline(FPS)
    assert set(tl) == {"yaw", "pitch", "roll", "blink", "brows", "smile", "jaw"}
    for name, values in tl.items():
        assert values.shape == (len(motion),)
        assert values[0] == 0.0 and abs(values[-1]) < 1e-9, name
    for name in ("blink", "brows", "smile", "jaw"):
        assert 0.0 <= tl[name].min() and tl[name].max() <= 1.0
        assert tl[name].max() > 0.8, name


@pytest.mark.parametrize("fps, size", [(0.0, 512), (-1.0, 512), (float("nan"), 512), (25.0, 0), (25.0, 10.5)])
def test_builtin_rejects_bad_arguments(fps: float, size: int) -> None:
    with pytest.raises(ValueError):
        procedural.builtin_motion(fps, size)


# ----------------------------------------------------------------------------- expressions


EXPRESSIONS = [procedural.blink, procedural.raise_brows, procedural.smile, procedural.jaw_open]


@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_expression_keeps_rigid_points_and_zero_is_identity(expression, canon: np.ndarray) -> None:
    out = expression(canon, 1.0)
    assert out.shape == canon.shape and out.dtype == np.float64
    np.testing.assert_allclose(out[topology.RIGID], canon[topology.RIGID], atol=1e-12)
    np.testing.assert_allclose(expression(canon, 0.0), canon, atol=1e-12)
    assert np.abs(out - canon).max() > 0.05


@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_expression_is_symmetric(expression, canon: np.ndarray) -> None:
    out = expression(canon, 0.7)
    np.testing.assert_allclose(out[load_canonical().mirror] * FLIP_X, out, atol=1e-9)


@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_expression_amount_is_clipped(expression, canon: np.ndarray) -> None:
    np.testing.assert_allclose(expression(canon, 3.0), expression(canon, 1.0))
    np.testing.assert_allclose(expression(canon, -1.0), canon, atol=1e-12)


@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_expression_rejects_bad_shape(expression, canon: np.ndarray) -> None:
    with pytest.raises(ShapeError):
        expression(canon[:468], 0.5)
    with pytest.raises(ValueError):
        expression(canon, float("nan"))


@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_expression_is_smooth_in_amount(expression, canon: np.ndarray) -> None:
    shapes = np.stack([expression(canon, a) for a in np.linspace(0.0, 1.0, 41)])
    assert np.abs(np.diff(shapes, axis=0)).max() < 0.04


def test_blink_closes_the_eyes(canon: np.ndarray) -> None:
    neutral = np.array(topology.eye_opening(canon))
    assert (np.array(topology.eye_opening(procedural.blink(canon, 1.0))) < 0.05 * neutral).all()
    half = np.array(topology.eye_opening(procedural.blink(canon, 0.5)))
    assert (0.3 * neutral < half).all() and (half < 0.7 * neutral).all()
    right_only = procedural.blink(canon, 1.0, side="right")
    assert topology.eye_opening(right_only)[0] < 0.05 * neutral[0]
    np.testing.assert_allclose(right_only[topology.LEFT_EYE], canon[topology.LEFT_EYE], atol=1e-12)
    with pytest.raises(ValueError):
        procedural.blink(canon, 1.0, side="middle")  # type: ignore[arg-type]


def test_jaw_opens_the_mouth_downwards(canon: np.ndarray) -> None:
    out = procedural.jaw_open(canon, 1.0)
    assert 0.4 < topology.mouth_opening(out) < 0.6
    np.testing.assert_allclose(out[topology.LIPS_INNER_UPPER], canon[topology.LIPS_INNER_UPPER], atol=1e-12)
    assert out[topology.CHIN, 1] > canon[topology.CHIN, 1] + 0.3  # the chin drops
    assert out[topology.LOWER_LIP_INNER, 1] > canon[topology.LOWER_LIP_INNER, 1] + 0.3
    opening = [topology.mouth_opening(procedural.jaw_open(canon, a)) for a in np.linspace(0, 1, 11)]
    assert np.all(np.diff(opening) > 0)


def test_smile_lifts_and_widens_the_mouth(canon: np.ndarray) -> None:
    out = procedural.smile(canon, 1.0)
    r, l_ = topology.MOUTH_RIGHT_CORNER, topology.MOUTH_LEFT_CORNER
    assert out[r, 1] < canon[r, 1] - 0.05 and out[l_, 1] < canon[l_, 1] - 0.05
    assert out[l_, 0] - out[r, 0] > canon[l_, 0] - canon[r, 0] + 0.1
    assert topology.mouth_opening(out) < 0.03  # a closed-mouth smile


def test_raise_brows(canon: np.ndarray) -> None:
    out = procedural.raise_brows(canon, 1.0)
    brows = np.concatenate([topology.RIGHT_EYEBROW, topology.LEFT_EYEBROW])
    assert (out[brows, 1] < canon[brows, 1] - 0.1).all()
    np.testing.assert_allclose(out[topology.RIGHT_EYE], canon[topology.RIGHT_EYE], atol=1e-12)


def test_combined_expressions_keep_the_lips_uncrossed(canon: np.ndarray) -> None:
    for s in np.linspace(0.0, 1.0, 6):
        for j in np.linspace(0.0, 1.0, 6):
            out = procedural.jaw_open(procedural.smile(canon, s), j)
            assert (out[topology.LIPS_INNER_LOWER, 1] >= out[topology.LIPS_INNER_UPPER, 1] - 1e-9).all()


# ----------------------------------------------------------------------------- pose_shape


def test_pose_shape_identity_is_scale_and_shift(canon: np.ndarray) -> None:
    out = procedural.pose_shape(canon, 0.0, 0.0, 0.0, (100.0, 50.0), 80.0)
    np.testing.assert_allclose(out, canon * 80.0 + np.array([100.0, 50.0, 0.0]), atol=1e-9)


def test_pose_shape_sign_conventions(canon: np.ndarray) -> None:
    def nose_minus_eyes(yaw: float, pitch: float) -> np.ndarray:
        p = procedural.pose_shape(canon, yaw, pitch, 0.0, (0.0, 0.0), 100.0)
        return p[topology.NOSE_TIP, :2] - np.mean(topology.eye_centers(p[:, :2]), axis=0)

    frontal = nose_minus_eyes(0.0, 0.0)
    assert nose_minus_eyes(20.0, 0.0)[0] > frontal[0] + 10  # yaw > 0: nose to the image right
    assert nose_minus_eyes(0.0, 12.0)[1] > frontal[1] + 5  # pitch > 0: nose down (a nod)
    rolled = procedural.pose_shape(canon, 0.0, 0.0, 10.0, (0.0, 0.0), 100.0)
    right, left = topology.eye_centers(rolled)
    assert right[1] < left[1] - 5  # roll > 0: clockwise on screen, the image-left eye goes up


def test_pose_shape_rotation_is_recoverable(canon: np.ndarray) -> None:
    out = procedural.pose_shape(canon, 17.0, -8.0, 5.0, (256.0, 256.0), 90.0)
    rot, s, _ = _fit(canon, out)
    assert s == pytest.approx(90.0)
    np.testing.assert_allclose(angles_from_rotation(rot), (17.0, -8.0, 5.0), atol=1e-9)


def test_pose_shape_validates(canon: np.ndarray) -> None:
    with pytest.raises(ShapeError):
        procedural.pose_shape(canon[:, :2], 0, 0, 0, (0, 0), 1.0)
    with pytest.raises(ShapeError):
        procedural.pose_shape(canon, 0, 0, 0, (0, 0, 0), 1.0)
    with pytest.raises(ValueError):
        procedural.pose_shape(canon, 0, 0, 0, (0, 0), 0.0)
