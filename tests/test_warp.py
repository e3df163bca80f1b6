import numpy as np
import pytest

from enliven.engine import topology as topo
from enliven.engine.errors import ShapeError
from enliven.engine.tps import TpsEvaluator, eval_tps, solve_tps
from enliven.engine.tps import tps_kernel as _tps_kernel
from enliven.engine.warp import Warper, border_anchors, fill_mouth_gap, inner_mouth_mask


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


# --- the thin-plate spline against an independent computation -------------------------------------------
#
# warp.py's spline is the textbook one (Bookstein 1989; Wahba 1990) written with U(r) = r^2 log r^2, twice
# the textbook phi(r) = r^2 log r that scipy also uses. Its smoothing is given relative to the mean kernel
# value, so it does not depend on that factor: enliven's (K_U + lam mean|K_U| I) w + P a = y is the textbook
# (K_phi + lam mean|K_phi| I) (2 w) + P a = y. Same function, weights twice as large, same affine part.
# Per-point release adds to lam point by point. The references below solve the textbook system another
# way (the null space of P', as in Wahba) and, where installed, with scipy's RBFInterpolator.


def _tps_points(size_px: int, seed: int, jitter: float = 0.02, face: int = 140) -> tuple[np.ndarray, np.ndarray]:
    """Control points like the Warper's: ``face`` points in the crop's middle (moved by ``jitter`` of the
    crop, normally distributed) and the 64 border anchors (held). Two (face + 64, 2) float64 arrays, pixels."""
    rng = np.random.default_rng(seed)
    moving = rng.uniform(0.25 * size_px, 0.75 * size_px, (face, 2))
    dst = np.concatenate([moving, border_anchors(size_px, 16)])
    src = dst.copy()
    src[:face] += rng.normal(0, jitter * size_px, (face, 2))
    return dst, src


def _textbook_phi(r: np.ndarray) -> np.ndarray:
    """phi(r) = r^2 log r, 0 at r = 0."""
    out = np.zeros_like(r)
    pos = r > 0
    out[pos] = r[pos] ** 2 * np.log(r[pos])
    return out


def _textbook_solve(dst: np.ndarray, src: np.ndarray, smoothing: float | np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Textbook TPS weights (N, 2) and affine part (3, 2) (constant, x, y), by the null-space method.

    The smoothing spline (K + Lam) w + P a = y, P' w = 0, with K_ij = phi(|dst_i - dst_j|) and
    Lam = diag(smoothing_i x mean K_ij): with P = [1 x y] = Q R, w = Q2 (Q2' (K + Lam) Q2)^-1 Q2' y
    (P' w = 0 by construction) and a = R^-1 Q1' (y - (K + Lam) w). No bordered system is formed.
    """
    n = len(dst)
    k = _textbook_phi(np.sqrt(((dst[:, None, :] - dst[None, :, :]) ** 2).sum(-1)))
    k_lam = k + np.diag(np.broadcast_to(smoothing, (n,)) * np.abs(k).mean())
    q, r = np.linalg.qr(np.column_stack([np.ones(n), dst]), mode="complete")
    q1, q2 = q[:, :3], q[:, 3:]
    w = q2 @ np.linalg.solve(q2.T @ k_lam @ q2, q2.T @ src)
    a = np.linalg.solve(r[:3], q1.T @ (src - k_lam @ w))
    return w, a


def _textbook_eval(w: np.ndarray, a: np.ndarray, dst: np.ndarray, points: np.ndarray) -> np.ndarray:
    """f(points) (M, 2) float64 = a0 + a_x x + a_y y + sum_i w_i phi(|p - dst_i|)."""
    r = np.sqrt(((points[:, None, :] - dst[None, :, :]) ** 2).sum(-1))
    return _textbook_phi(r) @ w + a[0] + points @ a[1:]


def _enliven_eval64(coef: np.ndarray, dst: np.ndarray, points: np.ndarray) -> np.ndarray:
    """enliven's coefficients (N + 3, 2) evaluated directly in float64 (textbook form, U = 2 phi)."""
    n = len(dst)
    return _textbook_eval(2.0 * coef[:n], coef[n:], dst, points)


def test_tps_kernel_is_r2_log_r2():
    r = np.array([0.0, 1e-4, 0.5, 1.0, 3.0, 300.0])
    np.testing.assert_allclose(_tps_kernel(r ** 2), 2.0 * _textbook_phi(r), rtol=1e-12, atol=1e-12)
    assert _tps_kernel(np.zeros(1))[0] == 0.0


@pytest.mark.parametrize("size_px", [256, 512])
def test_tps_solve_interpolates_its_control_points_exactly(size_px):
    """Unregularised, the spline passes through every control point: float64 residual < 1e-6 of the crop
    (measured ~1e-11 relative). The natural side conditions sum w = 0, sum w x = sum w y = 0 hold."""
    dst, src = _tps_points(size_px, seed=1)
    coef = solve_tps(dst, src, regularization=0.0)
    n = len(dst)
    assert coef.shape == (n + 3, 2) and coef.dtype == np.float64
    np.testing.assert_allclose(_enliven_eval64(coef, dst, dst), src, rtol=0, atol=1e-6 * size_px)
    w = coef[:n]
    side = np.abs(np.column_stack([np.ones(n), dst]).T @ w).max()
    assert side < 1e-12 * size_px * np.abs(w).sum()


@pytest.mark.parametrize("regularization, release", [(0.0, False), (1e-6, False), (1e-3, True)])
def test_tps_solve_reproduces_affine_maps(regularization, release):
    """An affine map bends nothing, so smoothing cannot touch it: the weights vanish (< 1e-9), the affine
    part is the map (1e-9 relative) and eval_tps gives it to float32 (1e-3 px at 500 random points)."""
    dst, _ = _tps_points(256, seed=2)
    a = np.array([[1.05, -0.2], [0.15, 0.9]])
    b = np.array([12.0, -7.5])
    src = dst @ a.T + b
    rel = np.random.default_rng(2).uniform(0, 1, len(dst)) if release else None
    coef = solve_tps(dst, src, regularization, rel)
    n = len(dst)
    assert np.abs(coef[:n]).max() < 1e-9
    np.testing.assert_allclose(coef[n], b, rtol=1e-9)
    np.testing.assert_allclose(coef[n + 1:].T, a, rtol=1e-9)
    q = np.random.default_rng(3).uniform(-30, 285, (500, 2))
    np.testing.assert_allclose(eval_tps(coef, dst, q), q @ a.T + b, rtol=0, atol=1e-3)


@pytest.mark.parametrize("regularization, release", [(0.0, False), (1e-6, False), (1e-3, True)])
def test_tps_solve_matches_an_independent_solve(regularization, release):
    """solve_tps against the textbook system solved by the null-space method (and scipy when installed).

    Weights (x2, kernel U = 2 phi) and affine part agree to 1e-8 relative to their largest entry; the two
    splines agree within 1e-6 px at 500 random points inside and around a 256 px crop (measured ~1e-9).
    With release, 20% of the points are let go by up to 1 (x the mean kernel value), like Warper.release.
    """
    dst, src = _tps_points(256, seed=4)
    rng = np.random.default_rng(4)
    rel = rng.uniform(0, 1, len(dst)) * (rng.uniform(size=len(dst)) < 0.2) if release else None
    coef = solve_tps(dst, src, regularization, rel)
    smoothing = regularization + (0.0 if rel is None else rel)
    w, a = _textbook_solve(dst, src, smoothing)
    n = len(dst)
    np.testing.assert_allclose(2.0 * coef[:n], w, rtol=0, atol=1e-8 * np.abs(w).max())
    np.testing.assert_allclose(coef[n:], a, rtol=0, atol=1e-8 * np.abs(a).max())
    q = rng.uniform(-0.1 * 256, 1.1 * 256, (500, 2))
    ours = _enliven_eval64(coef, dst, q)
    np.testing.assert_allclose(ours, _textbook_eval(w, a, dst, q), rtol=0, atol=1e-6)

    interpolate = pytest.importorskip("scipy.interpolate")
    k = _textbook_phi(np.sqrt(((dst[:, None, :] - dst[None, :, :]) ** 2).sum(-1)))
    rbf = interpolate.RBFInterpolator(dst, src, kernel="thin_plate_spline", degree=1,
                                      smoothing=np.broadcast_to(smoothing, (n,)) * np.abs(k).mean())
    np.testing.assert_allclose(ours, rbf(q), rtol=0, atol=1e-6)


@pytest.mark.parametrize("size_px", [128, 256, 512])
def test_tps_grid_evaluator_matches_direct_evaluation(size_px):
    """TpsEvaluator (the float32 grid kernel the Warper runs per frame, in the crop's centred, scaled frame,
    border anchors' columns precomputed) at the nodes of the Warper's coarse grid, against the float64
    direct sum, for rough random splines.

    float32 rounds the sum of kernel terms that cancel to pixels, so the error grows with the weights. The
    evaluator that ran on pixel coordinates was bounded by eps32 x sum |w_i| x max U over the grid (U up to
    ~1.6e6 px^2 at 256; it measured 0.1-0.3 of that bound); in the scaled frame the terms are ~10x smaller
    and the error is held to 5 % of that bound (measured 0.8-2.4 %: 0.0006-0.3 px on these rough splines).
    The same spline from eval_tps (no precomputed columns, one-off buffers) agrees within the same bound.
    Reusing the evaluator's buffers for fewer, then more, control points changes nothing.
    """
    cell = size_px / 64
    t = (np.arange(-1, 65) + 0.5) * cell - 0.5  # the Warper's coarse grid, one node beyond each side
    gx, gy = np.meshgrid(t, t)
    nodes = np.stack([gx.ravel(), gy.ravel()], 1)
    centre, half = np.full(2, (size_px - 1) / 2), size_px / 2
    kernel = TpsEvaluator(nodes, centre, half, fixed=border_anchors(size_px, 16))
    for seed, jitter, face in ((5, 0.002, 100), (6, 0.02, 140), (7, 0.05, 120)):  # the buffer grows, is reused
        dst, src = _tps_points(size_px, seed, jitter, face)  # face points, then the 64 border anchors
        coef = solve_tps(dst, src, regularization=1e-6)
        got = kernel.evaluate(coef, dst, fixed_at=face).copy()
        assert got.shape == (len(nodes), 2) and got.dtype == np.float32
        d2_max = ((nodes[:, None, :] - dst[None, :, :]) ** 2).sum(-1).max()
        bound = 0.05 * np.finfo(np.float32).eps * np.abs(coef[:-3]).sum(0) * _tps_kernel(np.array(d2_max))
        err = np.abs(got - _enliven_eval64(coef, dst, nodes)).max(0)
        assert (err <= bound).all(), (err, bound)
        fresh = eval_tps(coef, dst, nodes, centre, half)
        assert (np.abs(fresh - got).max(0) <= bound).all()
        assert np.array_equal(kernel.evaluate(coef, dst, fixed_at=face), got)  # deterministic, buffers reused


def test_tps_evaluator_checks_where_its_fixed_points_are():
    dst, src = _tps_points(256, seed=8)
    coef = solve_tps(dst, src)
    kernel = TpsEvaluator(dst[:10], np.full(2, 127.5), 128.0, fixed=border_anchors(256, 16))
    with pytest.raises(ValueError):
        kernel.evaluate(coef, dst, fixed_at=0)  # the anchors are at 140, not 0
    with pytest.raises(ValueError):
        kernel.evaluate(coef, dst)  # fixed_at missing
    with pytest.raises(ShapeError):
        kernel.evaluate(coef[:-1], dst, fixed_at=140)


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
                dets.append(_jacobian_det(anim.warper.flow(driven)).min())
                released.append(anim.warper.release(driven, 300).max())
    assert min(dets) > 0.0, dets
    assert max(released) > 0.5  # the far outline was really let go somewhere in the turn
    assert released[0] == 0.0  # and not while the head is near frontal


def _lean_in_frames(astronaut, border_release: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """(flow, driven points) of the analytic warp for a driver leaning in 1.5x, then 2x with the jaw wide open
    (the motion limits keep the head at most ~1.4x), after a calm second; crops of 256."""
    from enliven.animation.animator import Animator, AnimatorConfig
    from enliven.engine.canonical import load_canonical
    from enliven.engine.procedural import builtin_center_px, jaw_open, pose_shape
    from enliven.engine.warp import WarpConfig

    base, centre, scale = load_canonical().points, builtin_center_px(640), 0.18 * 640
    out = []
    with Animator(AnimatorConfig(output="crop", engine="analytic", warp=WarpConfig(border_release=border_release))) as anim:
        anim.prepare(astronaut)
        for k in range(25):
            anim.step_landmarks(pose_shape(base, 0, 0, 0, centre, scale), t=k / 25)
        for lean, jaw in ((1.5, 0.0), (2.0, 1.0)):
            anim.step_landmarks(pose_shape(jaw_open(base, jaw), 0, 0, 0, centre, scale * lean), t=2.0)
            driven = anim.last.driven_points
            out.append((anim.warper.flow(driven).copy(), driven))
    return out


def _folded_outside_mouth(flow: np.ndarray, driven: np.ndarray) -> np.ndarray:
    """Jacobian determinants of the map outside the mouth (grown 4 px: its gap is a seam by design)."""
    import cv2

    mouth = cv2.dilate((inner_mouth_mask(driven, flow.shape[0]) > 0).astype(np.uint8), np.ones((9, 9), np.uint8))
    return _jacobian_det(flow)[mouth == 0]


def test_border_release_lets_a_head_leaning_in_push_the_background_out(astronaut):
    """A head leaning in (and a jaw opening) onto the crop's lower edge folded the neck against the fixed
    border anchors: dark blobs under the chin. With the border release (warp version 6) the anchors the chin
    presses on give way and the map stays orientation-preserving there."""
    for (held, driven), (released, _) in zip(_lean_in_frames(astronaut, False), _lean_in_frames(astronaut, True),
                                              strict=True):
        before, after = _folded_outside_mouth(held, driven), _folded_outside_mouth(released, driven)
        assert (before <= 0).sum() > 50 and before.min() < -1.0  # the fold the release removes
        assert (after <= 0).sum() < 20 and after.min() > -0.1


def test_border_release_leaves_a_head_in_the_middle_alone(astronaut):
    """Nothing changes while no face or ring point nears the crop's edge: the built-in motion warps
    bit-identically with and without the release."""
    from enliven.animation.animator import Animator, AnimatorConfig
    from enliven.engine.procedural import builtin_motion
    from enliven.engine.warp import WarpConfig

    motion = builtin_motion(fps=5.0)
    outputs = []
    for release in (False, True):
        with Animator(AnimatorConfig(output="crop", engine="analytic", warp=WarpConfig(border_release=release))) as anim:
            anim.prepare(astronaut)
            outputs.append([anim.step_landmarks(p, t=i / 5).copy() for i, p in enumerate(motion)])
    for held, released in zip(*outputs, strict=True):
        np.testing.assert_array_equal(held, released)


def test_warp_versions_name_their_configs():
    from enliven.engine.warp import BORDER_WARP_VERSION, LID_SLIDE_WARP_VERSION, SQUASH_WARP_VERSION, WARP_VERSION
    from enliven.engine.warp import WarpConfig

    for version in (SQUASH_WARP_VERSION, LID_SLIDE_WARP_VERSION, BORDER_WARP_VERSION):
        assert WarpConfig.of_version(version).version == version
    assert WarpConfig().version == WARP_VERSION == BORDER_WARP_VERSION and WarpConfig().releases_border
    assert WarpConfig(border_release=False).version == LID_SLIDE_WARP_VERSION
    squash = WarpConfig(lid_slide=False)  # the squashing warp keeps its fixed border whatever border_release says
    assert squash.version == SQUASH_WARP_VERSION and not squash.releases_border
    with pytest.raises(ValueError, match="warp version"):
        WarpConfig.of_version(3)


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
        flow = anim.warper.flow(drv)
    assert sum(topo.eye_opening(drv)) < 0.5 * sum(topo.eye_opening(src))  # the eyes really are closed
    half_src, half_drv = Warper.lid_midpoints(src), Warper.lid_midpoints(drv)
    for k in (1, 3, 5, 8, 10, 12):  # points along both upper lids
        x, y = half_drv[k]
        sampled = flow[int(round(y)), int(round(x))]
        assert np.abs(sampled - half_src[k]).max() < 1.5, (k, sampled, half_src[k])
