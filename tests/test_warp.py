import numpy as np
import pytest

from enliven.engine import topology as topo
from enliven.engine.errors import ShapeError
from enliven.engine.warp import Warper, border_anchors, eval_tps, fill_mouth_gap, inner_mouth_mask, solve_tps


@pytest.fixture(scope="module")
def crop_and_points(astronaut, astronaut_face):
    from enliven.engine.compose import crop, crop_transform

    t = crop_transform(astronaut_face.landmarks, 256)
    return crop(astronaut, t), t.points_to_crop(astronaut_face.landmarks)


def test_tps_interpolates_its_control_points():
    rng = np.random.default_rng(0)
    dst = rng.uniform(0, 255, (60, 2))
    src = dst + rng.normal(0, 5, dst.shape)
    coef = solve_tps(dst, src, regularization=0.0)
    assert np.abs(eval_tps(coef, dst, dst) - src).max() < 0.05
    with pytest.raises(ShapeError):
        solve_tps(dst, src[:10])


def test_zero_motion_gives_back_the_source_crop(crop_and_points):
    image, points = crop_and_points
    warper = Warper(points, 256)
    map_x, map_y = np.moveaxis(warper.flow(points), -1, 0)
    gx, gy = np.meshgrid(np.arange(256), np.arange(256))
    assert np.abs(map_x - gx).max() < 0.5 and np.abs(map_y - gy).max() < 0.5
    out = warper.warp(image, points)
    assert np.abs(out.astype(int) - image).mean() < 1.0


def test_border_stays_fixed_under_large_head_motion(crop_and_points):
    _, points = crop_and_points
    warper = Warper(points, 256)
    moved = points.copy()
    moved[:, 0] += 20  # head slides 20 px right
    moved[:, 1] -= 10
    map_x, map_y = np.moveaxis(warper.flow(moved), -1, 0)
    gx, gy = np.meshgrid(np.arange(256.0), np.arange(256.0))
    edge = np.zeros((256, 256), bool)
    edge[:2], edge[-2:], edge[:, :2], edge[:, -2:] = True, True, True, True
    assert np.abs(map_x - gx)[edge].max() < 1.0 and np.abs(map_y - gy)[edge].max() < 1.0
    # the face itself moved: the output pixel at the driven nose tip samples the source nose tip
    nx, ny = np.round(moved[topo.NOSE_TIP, :2]).astype(int)
    assert abs(map_x[ny, nx] - points[topo.NOSE_TIP, 0]) < 1.5
    assert abs(map_y[ny, nx] - points[topo.NOSE_TIP, 1]) < 1.5


def test_border_anchors_lie_on_the_border():
    a = border_anchors(256, 8)
    assert a.shape == (32, 2)
    on_edge = (np.isclose(a, 0) | np.isclose(a, 255)).any(axis=1)
    assert on_edge.all()


def test_open_mouth_is_dark_not_stretched_lips(crop_and_points):
    image, points = crop_and_points
    closed = points.copy()
    closed[topo.LIPS_INNER_LOWER, 1] = closed[topo.LIPS_INNER_UPPER, 1]  # a closed-mouth source
    warper = Warper(closed, 256)
    opened = closed.copy()
    jaw = np.unique(np.concatenate([topo.LIPS_INNER_LOWER, [17, 84, 314, 181, 405, 91, 321, 152, 148, 377]]))
    opened[jaw, 1] += 14
    out = warper.warp(image, opened)
    lips = np.array([150.0, 90.0, 90.0])
    fill_mouth_gap(out, opened, warper.mouth(opened), lips)

    inside = inner_mouth_mask(opened, 256) > 0.99
    assert inside.sum() > 100
    assert out[inside].mean() < 0.5 * image.mean()  # a dark cavity, not lip texture


def test_gaze_moves_the_iris_inside_the_eye(crop_and_points):
    image, points = crop_and_points
    warper = Warper(points, 256)
    looking = points.copy()
    looking[topo.RIGHT_IRIS, 0] += 3.0  # both irises move 3 px towards image-right
    looking[topo.LEFT_IRIS, 0] += 3.0
    map_x, map_y = np.moveaxis(warper.flow(looking), -1, 0)
    for iris in (topo.RIGHT_IRIS[0], topo.LEFT_IRIS[0]):
        x, y = points[iris, :2]
        nx, ny = int(round(x + 3)), int(round(y))
        # the output pixel where the iris now is samples the source iris centre
        assert abs(map_x[ny, nx] - (nx - 3)) < 0.6 and abs(map_y[ny, nx] - ny) < 0.6
    corner = np.round(points[topo.RIGHT_EYE_OUTER, :2]).astype(int)
    assert abs(map_x[corner[1], corner[0]] - corner[0]) < 1.0  # the eye itself stays put
    out = warper.warp(image, looking)
    x, y = np.round(points[topo.RIGHT_IRIS[0], :2]).astype(int)
    assert np.abs(out[y, x + 3].astype(int) - image[y, x]).max() < 30  # the iris colour moved along


def _jacobian_det(flow: np.ndarray) -> np.ndarray:
    """Determinant of the backward map's Jacobian per pixel: <= 0 where the image folds over itself."""
    gx, gy = np.gradient(flow[..., 0]), np.gradient(flow[..., 1])
    return gx[1] * gy[0] - gx[0] * gy[1]


def test_head_turns_do_not_fold_the_far_cheek(astronaut):
    """At +-20 degrees of yaw the far cheek's outline turns behind the brow and cheek: released, not folded.

    Held, those points squeezed ~12 px of the source into 0.5 px: a swirl of hair on the cheek,
    spline weights 30x larger and float32 errors over 1 px. The map must stay orientation-preserving.
    """
    from enliven.animation.animator import Animator, AnimatorConfig
    from enliven.engine.procedural import builtin_motion

    motion = builtin_motion(fps=30.0)
    with Animator(AnimatorConfig(output="crop", engine="analytic")) as anim:
        anim.prepare(astronaut)
        dets, released = [], []
        for i, points in enumerate(motion[:int(3.6 * 30)]):
            anim.step_landmarks(points, t=i / 30)
            if i % 6 == 0 and i >= 15:  # through the turn to +20, to -20 and back
                driven = anim.last.driven_points
                dets.append(_jacobian_det(anim._warper.flow(driven)).min())
                released.append(anim._warper.release(driven, 300).max())
    assert min(dets) > 0.0, dets
    assert max(released) > 0.5  # the far outline was really let go somewhere in the turn
    assert released[0] == 0.0  # and not while the head is near frontal


def test_a_closed_lid_is_covered_with_lid_skin_not_the_iris(astronaut):
    """Halfway between brow and a closed upper lid the output shows the source's halfway lid skin.

    Without the brow-lid control points the spline kept that skin still under the brow (the
    halfway row sampled the source ~10 px too high) and crammed the rest of the lid, lashes and
    a strip of the eye into the last rows above the closed lid: a ghost of the iris on the lid.
    """
    from enliven.animation.animator import Animator, AnimatorConfig
    from enliven.engine.procedural import builtin_motion

    motion = builtin_motion(fps=30.0)
    shut = int(np.argmin([sum(topo.eye_opening(p)) for p in motion[:150]]))
    with Animator(AnimatorConfig(crop_size_px=512, output="crop", engine="analytic")) as anim:
        anim.prepare(astronaut)
        for i, points in enumerate(motion[:shut + 1]):
            anim.step_landmarks(points, t=i / 30)
        src, drv = anim.source.points, anim.last.driven_points
        flow = anim._warper.flow(drv)
    assert sum(topo.eye_opening(drv)) < 0.5 * sum(topo.eye_opening(src))  # the eyes really are closed
    half_src, half_drv = Warper.lid_midpoints(src), Warper.lid_midpoints(drv)
    for k in (1, 3, 5, 8, 10, 12):  # points along both upper lids
        x, y = half_drv[k]
        sampled = flow[int(round(y)), int(round(x))]
        assert np.abs(sampled - half_src[k]).max() < 1.5, (k, sampled, half_src[k])
