"""The quality grid at 512: the built-in photo driven by val clips to a blink, an open mouth and a head turn,
and a black-and-white copy of it to an open mouth, in each engine setting side by side.

Only the public-domain built-in photo appears; the val driver is shown as its landmark drawing, so the
grid can be committed (the data set's people never enter the repo).

    python -m enliven.evaluate.grids512 --out docs/quality_512.jpg [--weights W.pt [--squash-lids]]
"""
from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..animation.animator import Animator, AnimatorConfig
from ..engine import topology as topo
from ..engine.compose import crop_transform
from ..engine.defaults import builtin_photo, cache_root, data_root
from ..engine.render import draw_landmarks
from ..engine.warp import WarpConfig
from ..train.cache import ClipLandmarks, build_landmark_cache
from ..train.dataset import eye_openings, mouth_openings

log = logging.getLogger(__name__)
SIZE_PX = 512
ROWS = ("blink", "open mouth", "head turn", "black-and-white, open mouth")


@dataclass(frozen=True)
class Column:
    """One engine setting of the grid."""

    title: str
    config: AnimatorConfig


def default_columns(weights: str | None = None, squash_lids: bool = False) -> list[Column]:
    """analytic | trained (the defaults: sliding lids, eye patch) | trained without the eye patch | trained and
    trained + eye patch on the squashing warp (step 7228 and its eye patch), and the given weights if any."""
    base = dict(crop_size_px=SIZE_PX, output="crop", blink_seed=0)
    squash = WarpConfig(lid_slide=False)
    cols = [Column("analytic", AnimatorConfig(engine="analytic", **base)),
            Column("trained", AnimatorConfig(engine="trained", **base)),
            Column("no eye patch", AnimatorConfig(engine="trained", eye_patch_weights=None, **base)),
            Column("squashed lids (7228)", AnimatorConfig(engine="trained", warp=squash, eye_patch_weights=None,
                                                          **base)),
            Column("squashed + eye patch", AnimatorConfig(engine="trained", warp=squash, **base))]
    if weights:
        cols.append(Column(Path(weights).stem, AnimatorConfig(engine="trained", generator_weights=weights,
                                                              warp=WarpConfig(lid_slide=not squash_lids), **base)))
    return cols


def _turn(points: np.ndarray) -> np.ndarray:
    """How far the nose tip sits beside the eyes' midpoint, in interocular distances: (F, 478, 3) -> (F,)."""
    r = points[:, topo.RIGHT_EYE, :2].mean(1)
    le = points[:, topo.LEFT_EYE, :2].mean(1)
    iod = np.maximum(np.linalg.norm(le - r, axis=-1), 1e-6)
    return np.abs(points[:, topo.NOSE_TIP, 0] - (r[:, 0] + le[:, 0]) / 2) / iod


def pick_frames(clips: list[ClipLandmarks]) -> dict[str, tuple[ClipLandmarks, int]]:
    """For each row, the val clip and frame where it is most marked (deepest blink against the clip's own
    open eyes, widest mouth, furthest turn)."""
    best: dict[str, tuple[float, ClipLandmarks, int]] = {}
    for clip in clips:
        found = np.flatnonzero(clip.found)
        if len(found) < 30:
            continue
        pts = clip.points[found]
        eyes = eye_openings(pts)
        scores = {"blink": 1 - eyes / max(float(np.median(eyes)), 1e-6), "open mouth": mouth_openings(pts),
                  "head turn": _turn(pts)}
        for name, s in scores.items():
            k = int(np.nanargmax(s))
            if name not in best or s[k] > best[name][0]:
                best[name] = (float(s[k]), clip, int(found[k]))
    out = {k: (c, i) for k, (_, c, i) in best.items()}
    out["black-and-white, open mouth"] = out["open mouth"]
    return out


def drive(config: AnimatorConfig, photo: np.ndarray, clip: ClipLandmarks, frame: int) -> np.ndarray:
    """The crop (S, S, 3) uint8 of ``photo`` driven by ``clip`` from its start up to ``frame``."""
    out = None
    with Animator(config) as anim:
        anim.prepare(photo)
        for i in np.flatnonzero(clip.found):
            if i > frame:
                break
            out = anim.step_landmarks(clip.points[i], t=i / clip.fps)
    assert out is not None
    return out


def grid(clips: list[ClipLandmarks], columns: list[Column]) -> np.ndarray:
    """(rows x S, (2 + columns) x S, 3) uint8: photo | driver drawing | one crop per column, titled."""
    photo = builtin_photo()
    grey = np.repeat(cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    picks = pick_frames(clips)
    rows = []
    for name in ROWS:
        clip, frame = picks[name]
        src = grey if name.startswith("black") else photo
        drv = clip.points[frame]
        drawing = draw_landmarks(crop_transform(drv, SIZE_PX).points_to_crop(drv), SIZE_PX)
        with Animator(AnimatorConfig(crop_size_px=SIZE_PX, output="crop", engine="analytic")) as a:
            src_crop = a.prepare(src).crop
        cells = [src_crop, drawing] + [drive(c.config, src, clip, frame) for c in columns]
        log.info("row %s: %s frame %d", name, clip.row.file, frame)
        row = np.concatenate(cells, axis=1)
        cv2.putText(row, name, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2, cv2.LINE_AA)
        rows.append(row)
    head = np.zeros((36, rows[0].shape[1], 3), np.uint8)
    for j, title in enumerate(["photo", "driver (val)"] + [c.title for c in columns]):
        cv2.putText(head, title, (j * SIZE_PX + 8, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2, cv2.LINE_AA)
    return np.concatenate([head, *rows], axis=0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m enliven.evaluate.grids512", description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="image file (.jpg or .png)")
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--weights", default=None, help="another refiner's weights for a last column")
    ap.add_argument("--squash-lids", action="store_true", help="that column on the squashing warp (version 4)")
    ap.add_argument("--scale", type=float, default=0.5, help="scale of the written image")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    clips = build_landmark_cache(a.data or data_root(), cache_root(), ("val",), progress=False)
    img = grid(clips, default_columns(a.weights, a.squash_lids))
    if a.scale != 1:
        img = cv2.resize(img, None, fx=a.scale, fy=a.scale, interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(a.out), img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    print(f"wrote {a.out} ({img.shape[1]}x{img.shape[0]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
