"""The 512 quality grid picks the frames its rows name: the deepest blink, the widest mouth, the furthest turn."""
from __future__ import annotations

import numpy as np

from enliven.engine import topology as topo
from enliven.engine.canonical import load_canonical
from enliven.evaluate.grids512 import pick_frames
from enliven.train.cache import ClipLandmarks, ManifestRow


def _clip(name: str, frames: int = 40) -> tuple[ClipLandmarks, np.ndarray]:
    face = load_canonical().points * 100 + np.array([320.0, 240.0, 0.0])
    pts = np.repeat(face[None], frames, 0).astype(np.float32)
    return ClipLandmarks(ManifestRow(f"clips/{name}.mp4", "clip", name, "val", frames, 25.0), pts, 25.0,
                         (640, 480)), pts


def test_rows_get_their_most_marked_frames() -> None:
    a, pa = _clip("a")
    b, pb = _clip("b")
    for eye_up, eye_lo in ((topo.RIGHT_EYE_UPPER, topo.RIGHT_EYE_LOWER), (topo.LEFT_EYE_UPPER, topo.LEFT_EYE_LOWER)):
        pa[12, eye_lo, 1] = pa[12, eye_up, 1]  # a blinks at frame 12
        pa[13, eye_lo, 1] = (pa[13, eye_up, 1] + pa[13, eye_lo, 1]) / 2  # half-closed just after
    pb[30, topo.LIPS_INNER_LOWER, 1] += 40  # b opens its mouth at 30
    pb[33, :, 0] += np.where(np.arange(len(pb[33])) == topo.NOSE_TIP, 30, 0)  # and turns its nose at 33
    picks = pick_frames([a, b])
    assert (picks["blink"][0].row.file, picks["blink"][1]) == ("clips/a.mp4", 12)
    assert (picks["open mouth"][0].row.file, picks["open mouth"][1]) == ("clips/b.mp4", 30)
    assert (picks["head turn"][0].row.file, picks["head turn"][1]) == ("clips/b.mp4", 33)
    assert picks["black-and-white, open mouth"] == picks["open mouth"]
