import numpy as np
import pytest

from enliven.engine import topology as topo
from enliven.engine.canonical import angles_from_rotation, load_canonical, rotation_from_angles
from enliven.engine.errors import ShapeError
from enliven.engine.motion import (DriverReference, FaceState, Motion, Pose, TransferMode, apply_pose,
                                   clamp_closures, fit_pose, measure_motion, retarget, umeyama)

CANON = load_canonical().points


def posed(yaw, pitch, roll, scale=80.0, shift=(300.0, 220.0, 10.0), shape=CANON):
    return apply_pose(shape, Pose(rotation_from_angles(yaw, pitch, roll), np.array(shift), scale))


@pytest.mark.parametrize("angles", [(0, 0, 0), (20, 0, 0), (-25, 5, 0), (0, -15, 0), (10, 10, 8), (-30, 12, -10)])
def test_known_rotation_is_recovered_within_one_degree(angles):
    rng = np.random.default_rng(0)
    points = posed(*angles) + rng.normal(0, 0.5, (478, 3))  # half-pixel landmark noise
    pose = fit_pose(points, CANON)
    assert np.allclose(angles_from_rotation(pose.rotation), angles, atol=1.0)
    assert pose.scale == pytest.approx(80.0, rel=0.01)


def test_rigid_fit_ignores_expressions():
    shape = CANON.copy()
    shape[topo.LIPS_INNER_LOWER, 1] += 0.4  # mouth wide open: not a rigid point, must not tilt the head
    pose = fit_pose(posed(12, -4, 3, shape=shape), CANON)
    assert np.allclose(angles_from_rotation(pose.rotation), (12, -4, 3), atol=0.5)


def test_umeyama_exact_and_rejects_bad_shapes():
    rng = np.random.default_rng(1)
    src = rng.normal(size=(20, 3))
    r = rotation_from_angles(30, -10, 5)
    rot, t, s = umeyama(src, 2.5 * src @ r.T + [1, 2, 3])
    assert np.allclose(rot, r) and np.allclose(t, [1, 2, 3]) and s == pytest.approx(2.5)
    with pytest.raises(ShapeError):
        umeyama(src, src[:10])
    with pytest.raises(ShapeError):
        fit_pose(np.zeros((68, 3)), CANON)


def test_zero_motion_gives_back_the_source():
    source = FaceState.measure(posed(5, 3, -2, shift=(128, 120, 0), scale=50), CANON)
    driven = retarget(source, Motion.zero())
    assert np.abs(driven - apply_pose(source.shape, source.pose)).max() < 1e-9


def test_relative_transfer_rotates_source_by_driver_rotation_and_moves_mouth():
    ref = FaceState.measure(posed(10, 0, 0), CANON)  # the driver starts turned 10 degrees
    shape = CANON.copy()
    shape[topo.LIPS_INNER_LOWER, 1] += 0.3
    now = FaceState.measure(posed(25, 0, 0, shape=shape), CANON)  # turns 15 more and opens the mouth
    source = FaceState.measure(posed(-5, 0, 0, shift=(128, 128, 0), scale=50), CANON)
    driven = retarget(source, measure_motion(now, ref))
    out = FaceState.measure(driven, CANON)
    assert angles_from_rotation(out.pose.rotation)[0] == pytest.approx(10, abs=0.5)  # -5 + 15
    assert topo.mouth_opening(driven) > topo.mouth_opening(apply_pose(source.shape, source.pose)) + 0.2
    absolute = retarget(source, measure_motion(now, ref), TransferMode.ABSOLUTE)
    assert angles_from_rotation(FaceState.measure(absolute, CANON).pose.rotation)[0] == pytest.approx(25, abs=0.5)


def test_clamp_keeps_lips_and_lids_from_crossing():
    shape = CANON.copy()
    shape[topo.LIPS_INNER_LOWER, 1] -= 0.5  # lower lip pushed above the upper lip
    shape[topo.RIGHT_EYE_LOWER, 1] -= 0.5
    out = clamp_closures(shape)
    assert np.all(out[topo.LIPS_INNER_LOWER, 1] >= out[topo.LIPS_INNER_UPPER, 1])
    assert np.all(out[topo.RIGHT_EYE_LOWER, 1] >= out[topo.RIGHT_EYE_UPPER, 1])
    assert np.array_equal(out[topo.LEFT_EYE], shape[topo.LEFT_EYE])  # untouched where nothing crossed


def test_reference_is_the_most_neutral_frame_of_the_calibration_window():
    talking = CANON.copy()
    talking[topo.LIPS_INNER_LOWER, 1] += 0.3
    ref = DriverReference(CANON, calibration_s=1.0)
    first = FaceState.measure(posed(0, 0, 0, shape=talking), CANON)  # starts mid-word
    neutral = FaceState.measure(posed(0, 0, 0), CANON)
    assert ref.update(first, 0.0) is first
    assert ref.update(neutral, 0.5) is neutral
    assert ref.update(first, 0.7) is neutral
    # after the window a more closed mouth refreshes the mouth region only
    ref2 = DriverReference(CANON, calibration_s=0.1)
    ref2.update(first, 0.0)
    got = ref2.update(neutral, 1.0)
    assert topo.mouth_opening(got.shape) < 0.05


def test_soft_limits_pass_small_motion_and_bound_large_motion():
    from enliven.engine.motion import MotionLimits, limit_rotation, soft_limit

    assert soft_limit(0.3, 1.0) == pytest.approx(0.3)  # below the knee: unchanged
    big = soft_limit(np.array([-5.0, 0.9, 50.0]), 1.0)
    assert np.all(np.abs(big) <= 1.0) and big[0] < -0.95 and 0.7 < big[1] < 0.9
    xs = np.linspace(0, 2, 201)
    assert np.all(np.diff(soft_limit(xs, 1.0)) > 0)  # monotonic and continuous: no reversal, no jump
    assert np.abs(np.diff(soft_limit(xs, 1.0))).max() <= 0.01 + 1e-12
    limits = MotionLimits(rotation_deg=35.0)
    for deg in (10.0, 20.0, 60.0, 90.0):
        limited = limit_rotation(rotation_from_angles(deg, 0.0, 0.0), limits)
        got = np.degrees(np.arccos(np.clip((np.trace(limited) - 1) / 2, -1, 1)))
        assert got <= 35.0 + 1e-6 and (got == pytest.approx(deg, abs=1e-6) if deg <= 24.5 else got < deg)


def test_a_driver_in_profile_turns_the_photo_only_to_the_limit():
    ref = FaceState.measure(posed(0, 0, 0), CANON)
    now = FaceState.measure(posed(85, 0, 0, shift=(400, 0, 0)), CANON)  # near profile, and far to one side
    source = FaceState.measure(posed(0, 0, 0, shift=(128, 128, 0), scale=50), CANON)
    motion = measure_motion(now, ref)
    out = FaceState.measure(retarget(source, motion), CANON)
    yaw = angles_from_rotation(out.pose.rotation)[0]
    assert 24.0 < abs(yaw) <= 35.0 + 0.5  # turned a lot, but not into a profile the warp would tear
    assert np.linalg.norm(out.pose.translation[:2] - source.pose.translation[:2]) <= 50 * 1.0 * np.sqrt(2) + 1
    free = FaceState.measure(retarget(source, motion, limits=None), CANON)  # without limits it goes all the way
    assert abs(angles_from_rotation(free.pose.rotation)[0]) > 80.0
