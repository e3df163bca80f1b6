"""The radial iris map of the warp (engine/gaze.py)."""
import numpy as np
import pytest

from enliven.engine import topology as topo
from enliven.engine.gaze import GazeMap, inside_eye, ray_lengths
from enliven.engine.warp import Warper


@pytest.fixture(scope="module")
def crop_and_points(astronaut, astronaut_face):
    from enliven.engine.compose import crop, crop_transform

    t = crop_transform(astronaut_face.landmarks, 256)
    return crop(astronaut, t), t.points_to_crop(astronaut_face.landmarks)


def test_ray_lengths_of_a_circle_and_a_square():
    angles = np.linspace(-np.pi, np.pi, 73)
    circle = 5.0 * np.stack([np.cos(np.linspace(0, 2 * np.pi, 400, endpoint=False)),
                             np.sin(np.linspace(0, 2 * np.pi, 400, endpoint=False))], 1)
    assert np.abs(ray_lengths(circle, angles) - 5.0).max() < 1e-3
    square = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]) + [0.5, 0.0]  # origin off-centre
    expected = np.array([min(abs((1.5 if np.cos(a) > 0 else 0.5) / np.cos(a)) if abs(np.cos(a)) > 1e-12 else np.inf,
                             abs(1.0 / np.sin(a)) if abs(np.sin(a)) > 1e-12 else np.inf) for a in angles])
    assert np.abs(ray_lengths(square, angles) - expected).max() < 1e-9


def test_an_iris_centre_is_kept_inside_the_opening():
    u = np.linspace(-10, 10, 9)
    contour = np.concatenate([np.stack([u, -4 * (1 - (u / 10) ** 2)], 1)[::-1],
                              np.stack([u[1:-1], 3 * (1 - (u[1:-1] / 10) ** 2)], 1)])
    upper = np.arange(len(contour)) < 9
    upper[[0, 8]] = False  # the corners count as lower lid
    assert inside_eye(np.array([0.0, 0.0]), contour, upper, 3.0) == pytest.approx([0.0, 0.0])
    far = inside_eye(np.array([30.0, -30.0]), contour, upper, 3.0)
    assert far[0] == pytest.approx(10 - 1.5) and -4 < far[1] < 3  # half a radius from the corner, within the lids
    flat = np.concatenate([contour[:9] * [1, 0.01], contour[9:] * [1, 0.01]])
    assert inside_eye(np.array([0.0, 0.0]), flat, upper, 3.0) is None  # a shut eye: no iris to place


def test_the_map_is_the_identity_when_the_driven_eyes_are_the_sources(crop_and_points):
    _, points = crop_and_points
    gaze = GazeMap(points, 256)
    grid = np.stack(np.meshgrid(np.arange(256.0), np.arange(256.0)), -1).astype(np.float32)
    table = grid.copy()
    gaze.apply(table, points)
    moved = np.abs(table - grid).max(-1)
    assert moved.max() < 0.75  # only the half pixel kept inside the lids, at the contour


def test_a_moved_iris_is_a_rigid_disc_that_stays_in_the_eye(crop_and_points):
    image, points = crop_and_points
    warper = Warper(points, 256)
    radius = np.linalg.norm(points[topo.RIGHT_IRIS[1:], :2] - points[topo.RIGHT_IRIS[0], :2], axis=1).mean()
    looking = points.copy()
    shift = 0.6 * radius
    looking[topo.RIGHT_IRIS, 0] += shift
    looking[topo.LEFT_IRIS, 0] += shift
    table = warper.flow(looking)
    for iris in (topo.RIGHT_IRIS[0], topo.LEFT_IRIS[0]):
        c = looking[iris, :2]
        # across the disc, the map is the source's disc shifted: the iris moves whole, not as a rubber patch
        for du in (-0.7 * radius, 0.0, 0.7 * radius):
            x, y = round(c[0] + du), round(c[1])
            assert abs(table[y, x, 0] - (x - shift)) < 0.8 and abs(table[y, x, 1] - y) < 0.8
    corner = np.round(points[topo.RIGHT_EYE_OUTER, :2]).astype(int)
    assert np.abs(table[corner[1], corner[0]] - corner).max() < 1.0  # the eye itself stays put
    out = warper.warp(image, looking)
    x, y = np.round(points[topo.RIGHT_IRIS[0], :2]).astype(int)
    assert np.abs(out[y, x + round(shift)].astype(int) - image[y, x]).max() < 30  # the iris colour moved along


def test_a_closed_eye_is_left_to_the_spline(crop_and_points):
    from enliven.engine.canonical import load_canonical
    from enliven.engine.motion import FaceState, apply_pose
    from enliven.engine.procedural import blink

    _, points = crop_and_points
    state = FaceState.measure(points, load_canonical().points)
    shut = apply_pose(blink(state.shape, 1.0), state.pose)
    gaze = GazeMap(points, 256)
    table = np.random.default_rng(0).uniform(0, 255, (256, 256, 2)).astype(np.float32)
    before = table.copy()
    gaze.apply(table, shut)
    assert np.array_equal(table, before)
