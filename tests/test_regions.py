"""Region and behaviour metrics (enliven/evaluate/regions.py) on constructed inputs."""
import numpy as np
import pytest

from enliven.engine.canonical import load_canonical
from enliven.engine.procedural import blink, builtin_center_px, jaw_open, pose_shape
from enliven.evaluate import regions as rg


def _face(shape):
    return pose_shape(shape, 0, 0, 0, builtin_center_px(256), 0.18 * 256)


def test_masks_cover_their_regions():
    pts = _face(load_canonical().points)
    eyes, mouth, face = rg.eye_region(pts, 256), rg.mouth_region(pts, 256), rg.face_region(pts, 256)
    assert eyes.shape == (256, 256) and 0 < eyes.sum() < mouth.sum() * 3 and face.sum() > 10 * mouth.sum()
    assert (eyes * mouth).sum() == 0  # disjoint
    assert ((eyes > 0) <= (face > 0)).all() and ((mouth > 0) <= (face > 0)).all()


def test_blink_and_open_mouth_frames():
    base = load_canonical().points
    level = float(np.mean(rg.topo.eye_opening(_face(base))))
    assert not rg.is_blink(_face(base), level) and rg.is_blink(_face(blink(base, 1.0)), level)
    assert not rg.is_open_mouth(_face(base)) and rg.is_open_mouth(_face(jaw_open(base, 1.0)))


def test_masked_l1_and_chroma_reference_values():
    a = np.zeros((4, 4, 3), np.uint8)
    b = np.full((4, 4, 3), 51, np.uint8)
    m = np.zeros((4, 4))
    m[:2] = 1
    assert rg.masked_l1(a, b, m) == pytest.approx(0.2)
    assert np.isnan(rg.masked_l1(a, b, np.zeros((4, 4))))
    red = np.zeros((2, 2, 3), np.uint8)
    red[..., 0] = 255
    assert rg.chroma(red)[0, 0] == pytest.approx(255 * (0.168736 + 0.5))
    assert rg.chroma(rg.desaturate(red)).max() < 1e-9
    assert rg.chroma_percentile(b) == pytest.approx(0.0, abs=1e-9)


def test_region_scores_and_markdown():
    pts = _face(load_canonical().points)
    scores = rg.RegionScores.empty()
    a = np.zeros((256, 256, 3), np.uint8)
    valid = np.ones((256, 256))
    scores.add("analytic", a, a + 10, pts, valid, blink=True, open_mouth=False)
    scores.add("analytic", a, a, pts, valid, blink=True, open_mouth=True)
    means = scores.means()["analytic"]
    assert means["l1_eyes_blink"] == pytest.approx(5 / 255) and means["frames_eyes_blink"] == 2
    assert means["l1_mouth_open"] == 0.0 and means["frames_mouth_open"] == 1
    md = "\n".join(rg.report_markdown({"regions": scores.means(),
                                       "behaviour": {"trained": {"chroma_p99": 0.0, "still_drift": 0.0}}}))
    assert "Blinks and open mouths" in md and "| trained | 0.00 | 0.0000 |" in md
    assert rg.report_markdown({}) == []
