"""The relight stage: the photo's light re-applied as the head turns (engine/relight.py)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from enliven.engine.canonical import load_canonical, rotation_from_angles
from enliven.engine.compose import crop, crop_transform
from enliven.engine.motion import Pose, apply_pose, fit_pose, unpose
from enliven.engine.relight import (
    LightConfig,
    Relighter,
    fit_light,
    mesh_triangles,
    rasterize,
    skin_mask,
    vertex_normals,
)
from enliven.engine.warp import Warper, remap_source

SIZE = 256


@pytest.fixture(scope="module")
def photo(astronaut, astronaut_face):
    """The built-in photo's crop and its landmarks in crop pixels."""
    t = crop_transform(astronaut_face.landmarks, SIZE)
    return crop(astronaut, t), t.points_to_crop(astronaut_face.landmarks)


def turned(points: np.ndarray, yaw: float = 0.0, pitch: float = 0.0) -> np.ndarray:
    """The landmarks (478, 3) of the same face turned by yaw / pitch degrees about its own pose."""
    canonical = load_canonical().points
    pose = fit_pose(points, canonical)
    rotation = rotation_from_angles(yaw, pitch, 0.0) @ pose.rotation
    return apply_pose(unpose(points, pose), Pose(rotation, pose.translation, pose.scale))


def lit_by(points: np.ndarray, ambient: float, direction: np.ndarray) -> np.ndarray:
    """A grey face (S, S, 3) uint8 whose brightness is exactly ambient + direction . n on the mesh (0 off it)."""
    n = rasterize(points[:, :2], vertex_normals(points), points[:, 2], SIZE)
    inside = np.linalg.norm(n, axis=-1) > 0.5
    y = np.where(inside, ambient + n @ direction, 0.0)
    return np.repeat(np.clip(np.round(y), 0, 255).astype(np.uint8)[..., None], 3, axis=-1)


def test_mesh_covers_every_landmark():
    tri = mesh_triangles()
    assert tri.shape[1] == 3 and len(tri) > 800
    assert set(np.unique(tri)) == set(range(478))
    xy = load_canonical().points[:, :2]
    a, b, c = xy[tri[:, 0]], xy[tri[:, 1]], xy[tri[:, 2]]
    area = np.abs((b - a)[:, 0] * (c - a)[:, 1] - (b - a)[:, 1] * (c - a)[:, 0]) / 2
    assert area.min() > 0


def test_normals_face_the_camera_and_turn_with_the_head(photo):
    _, points = photo
    n = vertex_normals(points)
    assert np.allclose(np.linalg.norm(n, axis=1), 1.0)
    assert n[1, 2] < -0.7 and np.median(n[:, 2]) < -0.6  # the face looks at the camera (smaller z = nearer)
    rel = rotation_from_angles(25.0, 0.0, 0.0)
    n_turned = vertex_normals(turned(points, yaw=25.0))
    # The normals of the turned face are the photo's turned by the same rotation (to the mesh's accuracy).
    cos = np.sum(n_turned * (n @ rel.T), axis=1)
    assert np.median(cos) > 0.99


def test_fit_recovers_a_known_light(photo):
    _, points = photo
    direction = np.array([-30.0, -20.0, -60.0])
    image = lit_by(points, 120.0, direction)
    normals = rasterize(points[:, :2], vertex_normals(points), points[:, 2], SIZE)
    light = fit_light(image, normals, skin_mask(points, SIZE, LightConfig()))
    assert light is not None
    assert light.ambient == pytest.approx(120.0, abs=1.0)
    assert np.allclose(light.direction, direction, atol=1.5)


def test_photo_pose_is_left_exactly_as_it_is(photo):
    """A still head (the photo's own pose) is not relit at all: a still driver gives a still photo."""
    image, points = photo
    relighter = Relighter(image, points)
    assert relighter.active
    flow = Warper(points, SIZE).flow(points)
    assert relighter.ratio(flow, points) is None
    frame = remap_source(image, flow)
    assert relighter.apply(frame, flow, points) is frame


def test_turning_towards_the_light_brightens_and_away_darkens(photo):
    """A face lit from the image's left: turned to the left (yaw < 0: the nose goes to the image left) it gets
    brighter, to the right darker; the background is untouched; the ratio stays within its limits."""
    _, points = photo
    image = lit_by(points, 110.0, np.array([-50.0, 0.0, -40.0]))
    cfg = LightConfig()
    relighter = Relighter(image, points, cfg)
    warper = Warper(points, SIZE)
    means = {}
    for yaw in (-20.0, 20.0):
        driven = turned(points, yaw=yaw)
        flow = warper.flow(driven).copy()
        ratio = relighter.ratio(flow, driven)
        assert ratio is not None
        lo, hi = cfg.ratio_limits
        assert ratio.min() >= lo - 1e-6 and ratio.max() <= hi + 1e-6
        face = np.zeros((SIZE, SIZE), np.uint8)
        hull = cv2.convexHull(np.round(driven[:, :2]).astype(np.int32))
        cv2.fillConvexPoly(face, hull, 1)
        far = cv2.dilate(face, np.ones((31, 31), np.uint8)) == 0
        assert np.all(ratio[far] == 1.0)  # off the face: exactly as warped
        means[yaw] = float(ratio[face > 0].mean())
    assert means[-20.0] > 1.01 and means[20.0] < 0.99


def test_a_grey_photo_stays_grey(photo):
    image, points = photo
    grey = np.repeat(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=-1)
    relighter = Relighter(grey, points)
    warper = Warper(points, SIZE)
    driven = turned(points, yaw=-20.0, pitch=10.0)
    flow = warper.flow(driven)
    out = relighter.apply(remap_source(grey, flow), flow, driven)
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])


def test_no_usable_light_means_no_relight(photo):
    image, points = photo
    dark = (image // 16).astype(np.uint8)  # skin darker than min_brightness on average
    relighter = Relighter(dark, points)
    assert not relighter.active
    driven = turned(points, yaw=20.0)
    flow = Warper(points, SIZE).flow(driven)
    assert relighter.ratio(flow, driven) is None


def test_config_is_checked():
    with pytest.raises(ValueError):
        LightConfig(ratio_limits=(1.1, 1.2))
    with pytest.raises(ValueError):
        LightConfig(strength=-0.1)


def test_animator_relights_only_turned_faces(astronaut):
    """The Animator's relight stage: off (relight=None) and on give the same frame for the photo's own pose,
    and differ inside the face, not outside it, when the head turns."""
    from enliven.animation.animator import Animator, AnimatorConfig
    from enliven.engine.procedural import builtin_motion

    motion = builtin_motion(fps=25.0)
    outs = {}
    for name, light in (("on", LightConfig()), ("off", None)):
        with Animator(AnimatorConfig(output="crop", engine="analytic", relight=light)) as anim:
            src = anim.prepare(astronaut)
            first = anim.step_landmarks(motion[0], t=0.0).copy()
            turned_frame = None
            for k in range(1, 35):  # to the head turn at ~1.3 s
                turned_frame = anim.step_landmarks(motion[k], t=k / 25.0)
            outs[name] = (first, turned_frame.copy(), anim.last.driven_points)
            assert anim.last.timings_ms["relight"] >= 0.0
    assert np.array_equal(outs["on"][0], outs["off"][0])
    diff = np.abs(outs["on"][1].astype(int) - outs["off"][1].astype(int)).max(-1)
    face = np.zeros((SIZE, SIZE), np.uint8)
    cv2.fillConvexPoly(face, cv2.convexHull(np.round(outs["on"][2][:, :2]).astype(np.int32)), 1)
    assert diff[face > 0].mean() > 0.5
    assert diff[cv2.dilate(face, np.ones((31, 31), np.uint8)) == 0].max() == 0
    assert src.crop.shape == (SIZE, SIZE, 3)
