"""Lids that slide over a still eyeball (engine/eyelids.py, WarpConfig.lid_slide)."""
import numpy as np
import pytest

from enliven.engine import topology as topo
from enliven.engine.canonical import load_canonical
from enliven.engine.eyelids import eye_frames
from enliven.engine.procedural import blink, builtin_center_px, pose_shape
from enliven.engine.warp import LID_SLIDE_WARP_VERSION, SQUASH_WARP_VERSION, WARP_VERSION, WarpConfig, Warper


def _drive(shape: np.ndarray) -> np.ndarray:
    return pose_shape(shape, 0, 0, 0, builtin_center_px(512), 0.18 * 512).astype(np.float32)


@pytest.fixture(scope="module")
def blinking(astronaut):
    """The built-in photo (512 crop) and its driven landmarks at blink amounts 0, 0.5 and 1."""
    from enliven.animation.animator import Animator, AnimatorConfig

    base = load_canonical().points
    out = {}
    with Animator(AnimatorConfig(crop_size_px=512, output="crop", engine="analytic")) as anim:
        anim.prepare(astronaut)
        for i in range(30):
            anim.step_landmarks(_drive(base), t=i / 30)
        for j, amount in enumerate((0.0, 0.5, 1.0)):
            anim.step_landmarks(_drive(blink(base, amount)), t=1.0 + j / 30)
            out[amount] = anim.last.driven_points.copy()
        return anim.source.crop, anim.source.points, out


def _column(flow: np.ndarray, frame, src_frame, s: float, ts: np.ndarray) -> np.ndarray:
    """Where the flow samples (offset across the source eye, pixels) along one column of the driven eye."""
    xy = frame.point(np.full(len(ts), s), ts)
    x0, y0 = np.floor(xy).astype(int).T
    fx, fy = (xy - np.floor(xy)).T
    f = (flow[y0, x0] * ((1 - fx) * (1 - fy))[:, None] + flow[y0, x0 + 1] * (fx * (1 - fy))[:, None]
         + flow[y0 + 1, x0] * ((1 - fx) * fy)[:, None] + flow[y0 + 1, x0 + 1] * (fx * fy)[:, None])
    return (f - src_frame.origin) @ src_frame.normal


def test_version_and_default():
    assert WarpConfig().lid_slide is True and WarpConfig(border_release=False).version == LID_SLIDE_WARP_VERSION
    assert WarpConfig().version == WARP_VERSION != LID_SLIDE_WARP_VERSION  # the default adds the border release
    assert WarpConfig(lid_slide=False).version == SQUASH_WARP_VERSION != WARP_VERSION


def test_zero_motion_is_untouched(blinking):
    _, src, driven = blinking
    old = Warper(src, 512, WarpConfig(lid_slide=False)).flow(driven[0.0]).copy()
    new = Warper(src, 512, WarpConfig(lid_slide=True)).flow(driven[0.0])
    assert np.abs(new - old).max() < 0.05


def test_half_closed_eye_shows_the_eyeball_at_its_own_size(blinking):
    """At half a blink the opening samples the source eyeball 1:1 across the eye, not squashed ~2:1,
    and the row just above the driven lid margin samples the source's lash line."""
    _, src, driven = blinking
    drv = driven[0.5]
    old = Warper(src, 512, WarpConfig(lid_slide=False)).flow(drv).copy()
    new = Warper(src, 512, WarpConfig(lid_slide=True)).flow(drv)
    for d, s in zip(eye_frames(drv), eye_frames(src)):
        up, lo = float(d.at(0.0, "upper")), float(d.at(0.0, "lower"))
        assert (lo - up) < 0.7 * float(s.at(0.0, "lower") - s.at(0.0, "upper"))  # really half closed
        ts = np.linspace(up + 0.6 * (lo - up), lo - 1.5, 5)  # lower part of the opening, away from the lash line
        k = s.half_length / d.half_length
        slope_old = np.diff(_column(old, d, s, 0.0, ts)).mean() / np.diff(ts).mean()
        slope_new = np.diff(_column(new, d, s, 0.0, ts)).mean() / np.diff(ts).mean()
        assert slope_old > slope_new - 0.05  # (the spline alone squashes ~2:1; with the gaze map's disc ~1.05-1.1)
        assert abs(slope_new - k) < 0.15 * k, slope_new
        above = _column(new, d, s, 0.0, np.array([up - 0.5]))[0]
        assert abs(above - float(s.at(0.0, "upper"))) < 1.0


def test_shut_eye_shows_lid_and_lashes_not_the_iris(blinking):
    """With the lids at their smallest gap no output pixel between them samples the source's iris."""
    _, src, driven = blinking
    drv = driven[1.0]
    flow = Warper(src, 512, WarpConfig(lid_slide=True)).flow(drv)
    old = Warper(src, 512, WarpConfig(lid_slide=False)).flow(drv)
    for eye, iris in ((0, topo.RIGHT_IRIS), (1, topo.LEFT_IRIS)):
        d, s = eye_frames(drv)[eye], eye_frames(src)[eye]
        radius = np.linalg.norm(src[iris[1:], :2] - src[iris[0], :2], axis=1).mean()
        ss = np.linspace(-0.3, 0.3, 13)
        for flow_, expect_iris in ((old, True), (flow, False)):
            hits = []
            for sv in ss:
                up, lo = float(d.at(sv, "upper")), float(d.at(sv, "lower"))
                xy = d.point(np.full(3, sv), np.linspace(up + 0.25, lo - 0.25, 3))
                f = flow_[np.round(xy[:, 1]).astype(int), np.round(xy[:, 0]).astype(int)]
                # the iris below the source's upper lid (the part a shut lid must hide)
                inside = np.linalg.norm(f - src[iris[0], :2], axis=1) < 0.8 * radius
                below_lid = (f - s.origin) @ s.normal > float(s.at(sv, "upper")) + 3
                hits.append(np.any(inside & below_lid))
            assert any(hits) == expect_iris, (eye, expect_iris)


def test_flow_stays_orientation_preserving(blinking):
    """The correction never turns the map inside out (no negative Jacobian outside the lid margins)."""
    _, src, driven = blinking
    flow = Warper(src, 512, WarpConfig(lid_slide=True)).flow(driven[0.5])
    gx = np.gradient(flow[..., 0], axis=(1, 0))
    gy = np.gradient(flow[..., 1], axis=(1, 0))
    det = gx[0] * gy[1] - gx[1] * gy[0]
    assert (det > -0.05).mean() > 0.999


def test_weights_must_match_the_sliding_lid_warp():
    """Each warp has its shipped refiners (face and eye patch); the loaders refuse weights of the other warp."""
    from enliven.animation.animator import AnimatorConfig
    from enliven.engine.contract import contract_for
    from enliven.engine.errors import ModelFileError
    from enliven.export.runner import open_runner
    from enliven.models.generator import shipped_weights_path

    for lids in (True, False):  # a refiner ships for each warp
        AnimatorConfig(engine="trained", warp=WarpConfig(lid_slide=lids))
    for lids in (True, False):  # and an eye patch refiner for each
        AnimatorConfig(engine="trained", crop_size_px=512, eye_patch_weights="shipped", warp=WarpConfig(lid_slide=lids))
    for backend in ("torch", "onnxruntime"):
        for version in (LID_SLIDE_WARP_VERSION, SQUASH_WARP_VERSION):  # the shipped weights of each warp open
            assert open_runner(backend=backend, expected=contract_for(version)).resolution_px == 128
        with pytest.raises(ModelFileError, match="warp_version"):  # weights of one warp refuse the other
            open_runner(str(shipped_weights_path(warp_version=SQUASH_WARP_VERSION)), backend=backend,
                        expected=contract_for(LID_SLIDE_WARP_VERSION))
