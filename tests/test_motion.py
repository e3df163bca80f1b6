import numpy as np
import pytest

from enliven.engine import topology as topo
from enliven.engine.canonical import angles_from_rotation, load_canonical, rotation_from_angles
from enliven.engine.errors import ShapeError
from enliven.engine.motion import (GAIN_LIMITS, MIN_LID_GAP, DriverReference, FaceState, Motion, MotionGains,
                                   MotionLimits, Pose, TransferMode, _rotmat, apply_pose, channel_membership,
                                   clamp_closures, fit_pose, gaze_reliability, measure_motion, retarget, umeyama)

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


# --- per-channel gains ---------------------------------------------------------------------------------------

def _expressive_motion():
    """A driver that turns 12 degrees, shifts, opens its mouth, half-closes its eyes, raises its brows and looks
    to the image right, measured against its neutral frame."""
    from enliven.engine.procedural import blink, jaw_open, raise_brows

    shape = raise_brows(blink(jaw_open(CANON, 0.8), 0.5), 1.0)
    shape[topo.RIGHT_IRIS, 0] += 0.06
    shape[topo.LEFT_IRIS, 0] += 0.06
    ref = FaceState.measure(posed(0, 0, 0), CANON)
    now = FaceState.measure(posed(12, 0, 0, shift=(310.0, 225.0, 10.0), shape=shape), CANON)
    return measure_motion(now, ref)


SOURCE = FaceState.measure(posed(-4, 2, 0, shift=(128, 128, 0), scale=50), CANON)


def _shape_of(driven):
    return FaceState.measure(driven, CANON)


def test_gains_are_checked_and_named():
    assert MotionGains().as_dict() == {name: 1.0 for name in GAIN_LIMITS}
    assert GAIN_LIMITS["head_rotation"] == GAIN_LIMITS["head_position"] == 1.5
    assert GAIN_LIMITS["eyes"] == GAIN_LIMITS["gaze"] == GAIN_LIMITS["brows"] == GAIN_LIMITS["mouth"] == 2.0
    assert MotionGains.from_mapping({"mouth": 1.3}, MotionGains(eyes=0.5)) == MotionGains(eyes=0.5, mouth=1.3)
    for bad in ({"mouth": 2.01}, {"head_rotation": 1.6}, {"eyes": -0.1}, {"gaze": float("nan")}, {"brows": True},
                {"mouth": "1"}, {"mouth": None}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            MotionGains.from_mapping(bad)
    with pytest.raises(ValueError, match="expected one of head_rotation, head_position, eyes, gaze, brows, mouth"):
        MotionGains.from_mapping({"nose": 1.0})


def test_channel_membership_splits_every_point_between_the_channels():
    m = channel_membership()
    irises = np.concatenate([topo.RIGHT_IRIS, topo.LEFT_IRIS])
    rest = np.setdiff1d(np.arange(478), irises)
    assert np.allclose(m[rest].sum(1), 1.0) and np.all(m[irises] == 0)
    assert np.all(m[topo.RIGHT_EYE_UPPER] == [1, 0, 0]) and np.all(m[topo.LEFT_EYEBROW] == [0, 1, 0])
    assert np.all(m[topo.LIPS_INNER] == [0, 0, 1]) and np.all(m[topo.CHIN] == [0, 0, 1])


def test_gain_one_is_the_plain_transfer():
    """All gains 1: the source plus the driver's offsets, posed by the driver's relative motion (as before the
    gains existed); the irises only sit where the gaze puts them."""
    motion = _expressive_motion()
    driven = retarget(SOURCE, motion, limits=None)
    rotation = _rotmat(motion.rotvec) @ SOURCE.pose.rotation
    plain = apply_pose(clamp_closures(SOURCE.shape + motion.expression, SOURCE.shape),
                       Pose(rotation, SOURCE.pose.translation + motion.shift * SOURCE.pose.scale,
                            SOURCE.pose.scale * np.exp(motion.log_scale)))
    irises = np.concatenate([topo.RIGHT_IRIS, topo.LEFT_IRIS])
    rest = np.setdiff1d(np.arange(478), irises)
    assert np.abs(driven[rest] - plain[rest]).max() < 1e-9
    assert np.abs(topo.gaze(driven) - topo.gaze(plain)).max() < 0.02  # the same gaze, placed in eye widths


@pytest.mark.parametrize("channel", ["eyes", "brows", "mouth", "gaze", "head_rotation", "head_position"])
def test_gain_zero_keeps_the_photos_own_channel(channel):
    motion = _expressive_motion()
    own = apply_pose(SOURCE.shape, SOURCE.pose)
    full = retarget(SOURCE, motion, limits=None)
    driven = retarget(SOURCE, motion, gains=MotionGains(**{channel: 0.0}), limits=None)
    shape = _shape_of(driven).shape
    if channel == "eyes":
        lids = np.concatenate([topo.RIGHT_EYE, topo.LEFT_EYE])
        assert np.abs(shape[lids] - SOURCE.shape[lids]).max() < 1e-6
        assert topo.eye_opening(shape) == pytest.approx(topo.eye_opening(SOURCE.shape), abs=1e-6)
        assert sum(topo.eye_opening(_shape_of(full).shape)) < 0.8 * sum(topo.eye_opening(SOURCE.shape))
    elif channel == "brows":
        brows = np.concatenate([topo.RIGHT_EYEBROW, topo.LEFT_EYEBROW])
        assert np.abs(shape[brows] - SOURCE.shape[brows]).max() < 1e-6
    elif channel == "mouth":
        assert topo.mouth_opening(driven) == pytest.approx(topo.mouth_opening(own), abs=1e-3)
        assert topo.mouth_opening(full) > topo.mouth_opening(own) + 0.2
    elif channel == "gaze":
        assert np.abs(topo.gaze(shape) - topo.gaze(SOURCE.shape)).max() < 1e-6
        assert topo.gaze(_shape_of(full).shape)[0] > topo.gaze(SOURCE.shape)[0] + 0.1
    elif channel == "head_rotation":
        assert np.allclose(angles_from_rotation(fit_pose(driven, CANON).rotation),
                           angles_from_rotation(SOURCE.pose.rotation), atol=0.2)
    else:
        pose = fit_pose(driven, CANON)
        assert pose.scale == pytest.approx(SOURCE.pose.scale, rel=1e-3)
        assert np.abs(pose.translation - SOURCE.pose.translation).max() < 1.0


def test_gains_above_one_exaggerate_within_their_limit():
    motion = _expressive_motion()
    own = apply_pose(SOURCE.shape, SOURCE.pose)

    def mouth(g):
        return topo.mouth_opening(retarget(SOURCE, motion, gains=MotionGains(mouth=g), limits=None)) \
            - topo.mouth_opening(own)

    assert mouth(2.0) == pytest.approx(2 * mouth(1.0), rel=0.05)
    turned = [_shape_of(retarget(SOURCE, motion, gains=MotionGains(head_rotation=g))) for g in (1.0, 1.5)]
    yaw = [angles_from_rotation(face.pose.rotation)[0] for face in turned]
    assert yaw[1] - (-4) == pytest.approx(1.5 * (yaw[0] - (-4)), rel=0.05)  # 12 -> 18 degrees from the photo's -4
    gaze = [topo.gaze(retarget(SOURCE, motion, gains=MotionGains(gaze=g)))[0] - topo.gaze(own)[0] for g in (1.0, 2.0)]
    assert 1.5 * gaze[0] < gaze[1] <= MotionLimits().gaze_x + 0.05  # more, but the irises stay in the eye
    # Eyes: a half-closed driver at gain 2 closes the lids, and never past shut.
    opening = [sum(topo.eye_opening(_shape_of(retarget(SOURCE, motion, gains=MotionGains(eyes=g))).shape))
               for g in (1.0, 2.0)]
    assert opening[1] == pytest.approx(2 * MIN_LID_GAP, abs=0.005) and opening[1] < 0.7 * opening[0]  # shut
    lids = _shape_of(retarget(SOURCE, motion, gains=MotionGains(eyes=2.0)))
    assert np.all(lids.shape[topo.RIGHT_EYE_LOWER, 1] - lids.shape[topo.RIGHT_EYE_UPPER, 1] >= MIN_LID_GAP - 1e-6)


def test_eye_offsets_replace_the_drivers_lids():
    from enliven.engine.procedural import blink

    motion = _expressive_motion()
    own = apply_pose(SOURCE.shape, SOURCE.pose)
    kept = retarget(SOURCE, motion, eye_offsets=np.zeros((478, 3)))
    assert topo.eye_opening(_shape_of(kept).shape) == pytest.approx(topo.eye_opening(SOURCE.shape), abs=1e-6)
    assert topo.mouth_opening(kept) > topo.mouth_opening(own) + 0.2  # the rest still follows
    shut = retarget(SOURCE, motion, eye_offsets=blink(SOURCE.shape, 1.0) - SOURCE.shape)
    assert sum(topo.eye_opening(_shape_of(shut).shape)) == pytest.approx(2 * MIN_LID_GAP, abs=0.005)


def test_gaze_is_measured_in_eye_widths_and_trusted_only_with_open_eyes():
    from enliven.engine.procedural import blink

    looking = CANON.copy()
    looking[topo.RIGHT_IRIS, 0] += 0.043  # a tenth of the canonical eye width (0.43)
    looking[topo.LEFT_IRIS, 0] += 0.043
    ref = FaceState.measure(posed(0, 0, 0), CANON)
    now = FaceState.measure(posed(0, 0, 0, shape=looking), CANON)
    assert measure_motion(now, ref).gaze == pytest.approx([0.1, 0.0], abs=0.005)
    assert gaze_reliability(now, ref) == pytest.approx(1.0)
    closed = FaceState.measure(posed(0, 0, 0, shape=blink(CANON, 0.9)), CANON)
    assert gaze_reliability(closed, ref) == 0.0
