import numpy as np

from enliven.engine import topology as topo
from enliven.engine.compose import PasteBack, crop, crop_transform, feather_mask


def test_crop_is_aligned_and_centred(astronaut_face):
    t = crop_transform(astronaut_face.landmarks, 256)
    pts = t.points_to_crop(astronaut_face.landmarks)
    right, left = topo.eye_centers(pts[:, :2])
    assert abs(right[1] - left[1]) < 0.5  # eyes level
    oval = pts[topo.FACE_OVAL, :2]
    assert oval.min() > 0 and oval.max() < 256  # the whole face inside
    assert 0.3 < (oval[:, 0].max() - oval[:, 0].min()) / 256 < 0.7


def test_pasting_the_unchanged_crop_gives_back_the_photo(astronaut, astronaut_face):
    t = crop_transform(astronaut_face.landmarks, 256)
    paste = PasteBack(astronaut, t)
    out = paste(crop(astronaut, t))
    assert out.shape == astronaut.shape and out.dtype == np.uint8
    x0, y0, x1, y1 = paste.box
    outside = np.ones(astronaut.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(out[outside], astronaut[outside])  # untouched outside the face box
    assert np.abs(out.astype(int) - astronaut).mean() < 1.5  # resampling blur only


def test_crop_past_the_photo_edge_replicates_edge_pixels(astronaut, astronaut_face):
    photo = np.ascontiguousarray(astronaut[60:300, 100:360])  # the face near the top edge
    pts = astronaut_face.landmarks - np.array([100, 60, 0], np.float32)
    t = crop_transform(pts, 256)
    c = crop(photo, t)
    assert c.shape == (256, 256, 3)
    top = c[:8].astype(int)
    assert np.abs(np.diff(top, axis=0)).mean() < 2  # rows above the photo repeat its edge row: no bars
    assert not (top.sum(-1) == 0).any()  # no black fill where the crop runs past the photo


def test_feather_mask_is_one_inside_zero_at_edges():
    m = feather_mask(256)
    assert m[128, 128] == 1.0 and m[0, 0] < 0.01 and m.shape == (256, 256)
