"""Contact sheets of the motion controls, to look at after a change to the gains, the gaze map or the warp.

    python scripts/controls_sheet.py OUT_DIR [--engine trained|analytic] [--size 256|512]

writes OUT_DIR/eyes.png (both eyes, enlarged: gaze left / right / up / down and eyes closed, at
gaze and eyes gains 0 / 1 / 2) and OUT_DIR/channels.png (the face crop per channel at gains 0 / 1 /
its limit). The driver is the canonical face in landmarks (no video): neutral for its calibration,
then each expression.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from enliven.animation.animator import Animator, AnimatorConfig
from enliven.engine import topology as topo
from enliven.engine.canonical import load_canonical
from enliven.engine.defaults import builtin_photo
from enliven.engine.motion import GAIN_LIMITS, MotionGains
from enliven.engine.procedural import (
    blink,
    builtin_center_px,
    jaw_open,
    pose_shape,
    raise_brows,
)

CANON = load_canonical().points
IRISES = np.concatenate([topo.RIGHT_IRIS, topo.LEFT_IRIS])


def driver(shape: np.ndarray = CANON, yaw: float = 0.0, shift_iod: float = 0.0) -> np.ndarray:
    centre = builtin_center_px(512) + [shift_iod * 0.18 * 512, 0.0]
    return pose_shape(shape, yaw, 0.0, 0.0, centre, 0.18 * 512).astype(np.float32)


def looking(dx_iod: float, dy_iod: float = 0.0) -> np.ndarray:
    shape = CANON.copy()
    shape[IRISES, 0] += dx_iod
    shape[IRISES, 1] += dy_iod
    return shape


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    tile = np.ascontiguousarray(tile)
    cv2.putText(tile, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 0), 1, cv2.LINE_AA)
    return tile


def _show(animator: Animator, frame: np.ndarray, t: float, gains: MotionGains) -> tuple[np.ndarray, float]:
    """The output for ``frame`` at ``gains`` (a few steps to settle), then back to neutral."""
    animator.set_gains(gains)
    for _ in range(4):
        out = animator.step_landmarks(frame, t)
        t += 0.04
    animator.set_gains(MotionGains())
    for _ in range(4):
        animator.step_landmarks(driver(), t)
        t += 0.04
    return out, t


def eyes_sheet(animator: Animator, t: float) -> tuple[np.ndarray, float]:
    cases = [("left", driver(looking(-0.1))), ("right", driver(looking(0.1))), ("up", driver(looking(0, -0.04))),
             ("down", driver(looking(0, 0.04))), ("closed", driver(blink(CANON, 1.0)))]
    assert animator.source is not None
    p = animator.source.points
    pad = 0.25 * topo.interocular_distance(p)
    x0, x1 = int(p[topo.RIGHT_EYE_OUTER, 0] - pad), int(p[topo.LEFT_EYE_OUTER, 0] + pad)
    y0, y1 = int(p[topo.RIGHT_EYE, 1].min() - pad), int(p[topo.RIGHT_EYE, 1].max() + pad)
    zoom = 400 / (x1 - x0)
    rows = []
    for g in (0.0, 1.0, 2.0):
        row = []
        for name, frame in cases:
            out, t = _show(animator, frame, t, MotionGains(gaze=g, eyes=g))
            tile = cv2.resize(out[y0:y1, x0:x1], None, fx=zoom, fy=zoom, interpolation=cv2.INTER_CUBIC)
            row.append(_label(tile, f"{name}, gaze and eyes {g:g}"))
        rows.append(np.concatenate(row, 1))
    return np.concatenate(rows, 0), t


def channels_sheet(animator: Animator, t: float) -> tuple[np.ndarray, float]:
    cases = {"head_rotation": driver(yaw=12.0), "head_position": driver(shift_iod=0.25),
             "eyes": driver(blink(CANON, 0.6)), "gaze": driver(looking(0.06)),
             "brows": driver(raise_brows(CANON, 0.6)), "mouth": driver(jaw_open(CANON, 0.4))}
    rows = []
    for name, frame in cases.items():
        row = []
        for g in (0.0, 1.0, GAIN_LIMITS[name]):
            out, t = _show(animator, frame, t, MotionGains(**{name: g}))
            row.append(_label(out, f"{name} {g:g}"))
        rows.append(np.concatenate(row, 1))
    return np.concatenate(rows, 0), t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--engine", default="trained", choices=("trained", "analytic"))
    parser.add_argument("--size", type=int, default=256, choices=(256, 512))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with Animator(AnimatorConfig(output="crop", engine=args.engine, crop_size_px=args.size)) as animator:
        animator.prepare(builtin_photo())
        t = 0.0
        for _ in range(30):  # the calibration window: the neutral face is the driver's reference
            animator.step_landmarks(driver(), t)
            t += 0.04
        eyes, t = eyes_sheet(animator, t)
        channels, t = channels_sheet(animator, t)
    for name, image in (("eyes.png", eyes), ("channels.png", channels)):
        cv2.imwrite(str(args.out / name), image[..., ::-1])
        print(f"wrote {args.out / name}")


if __name__ == "__main__":
    main()
