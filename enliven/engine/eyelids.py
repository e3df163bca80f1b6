"""Lids that slide over a still eyeball: a correction of the warp's flow inside a closing eye.

A spline through the lid landmarks maps the driven eye opening onto the whole source opening, so
a closing eye shows the source's iris squashed into a slit. A real upper lid slides down over an
eyeball that stays put. This module replaces, inside the driven opening of each eye, the flow's
component across the eye (along the normal of the corner-to-corner axis) by that of the eyeball
held still in the frame of the eye corners: the opening shows the part of the source eyeball
that the lids leave uncovered, at its own size. Above the opening the spline already stretches
the source's lid skin from the brow down to the lashes (``Warper.lid_midpoints``), so the lashes
follow the lid margin. When the lids nearly meet (within a few times the smallest lid gap that
``motion.clamp_closures`` keeps) the last slit shows the lash line, not a sliver of iris.

Only closing counts: where the driven eye is as open as the source's, or wider, the flow is left
as the spline made it (a photo has no eyeball pixels under its own lids).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np

from . import topology as topo
from .gaze import CLOSED_LID_RATIO, OPEN_LID_RATIO, lid_gap, smoothstep
from .motion import MIN_LID_GAP

# (outer corner, inner corner, upper lid, lower lid, brow's lower contour) of the subject's right and left eyes.
_EYES = ((topo.RIGHT_EYE_OUTER, topo.RIGHT_EYE_INNER, topo.RIGHT_EYE_UPPER, topo.RIGHT_EYE_LOWER, topo.RIGHT_EYEBROW[:5]),
         (topo.LEFT_EYE_OUTER, topo.LEFT_EYE_INNER, topo.LEFT_EYE_UPPER, topo.LEFT_EYE_LOWER, topo.LEFT_EYEBROW[:5]))
CLOSING_RAMP = 0.3  # the correction reaches full strength when the lid gap is this fraction below the source's
SLIT_GAPS = 3.0  # below this many minimum lid gaps the eyeball fades from the slit (the lash line shows)
LID_BAND = 0.45  # the lid skin re-laid evenly: this fraction of the way from the lid margin up to the brow
LOWER_BAND = 0.5  # ... and below the lower lid, this many source lid gaps
LASH_IOD = 0.02  # thickness of the lash line under the upper lid's landmarks, interocular distances
CORNER_TAPER = 0.15  # the correction fades out over this fraction of the half length at each corner
_COLUMNS = np.linspace(-1, 1, 17)  # where a closing eye is looked for: positions along the eye, half lengths


@dataclass(frozen=True)
class EyeFrame:
    """An eye's frame: origin between its corners, unit axis from outer to inner corner, normal (y down).

    Lids and brow are profiles along the axis: positions s (half lengths, -1 at the outer corner
    and 1 at the inner one, increasing) and offsets t along the normal (pixels).
    """

    origin: np.ndarray  # (2,) float64, pixels
    axis: np.ndarray  # (2,) float64, unit
    normal: np.ndarray  # (2,) float64, unit, pointing from the upper lid to the lower
    half_length: float  # half the corner-to-corner distance, pixels
    upper: tuple[np.ndarray, np.ndarray]  # (s, t) of the upper lid, corners included, (9,) each
    lower: tuple[np.ndarray, np.ndarray]  # (s, t) of the lower lid, (9,) each
    brow: tuple[np.ndarray, np.ndarray]  # (s, t) of the brow's lower contour, (5,) each

    @classmethod
    def measure(cls, points: np.ndarray, outer: int, inner: int, upper: np.ndarray, lower: np.ndarray,
                brow: np.ndarray) -> EyeFrame:
        """Args: points (478, 2|3) pixels; corner indices; paired lid indices (corners excluded); brow indices."""
        a, b = points[outer, :2].astype(np.float64), points[inner, :2].astype(np.float64)
        origin = (a + b) / 2
        span = b - a
        half = max(float(np.sqrt(span.dot(span))) / 2, 1e-6)  # = np.linalg.norm(span), as it computes it
        axis = span / (2 * half)
        normal = np.array([-axis[1], axis[0]])
        if normal[1] < 0:
            normal = -normal

        def profile(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            p = p - origin
            s, t = p @ axis / half, p @ normal
            order = np.argsort(s)
            return s[order], t[order]

        lid = points[np.concatenate([[outer], upper, [inner, outer], lower, [inner]]), :2].astype(np.float64)
        n = len(upper) + 2  # a lid's points, corners included
        return cls(origin, axis, normal, half, profile(lid[:n]), profile(lid[n:]),
                   profile(points[brow, :2].astype(np.float64)))

    @cached_property
    def column_gaps(self) -> np.ndarray:
        """The lid gap (pixels, >= 0) at the columns ``slide_lids`` looks for a closing eye in (_COLUMNS)."""
        return np.maximum(self.at(_COLUMNS, "lower") - self.at(_COLUMNS, "upper"), 0.0)

    def at(self, s: np.ndarray, which: str) -> np.ndarray:
        """Offset (pixels along the normal) of the ``which`` profile ("upper", "lower", "brow") at ``s``."""
        ps, pt = getattr(self, which)
        return np.interp(s, ps, pt)

    def point(self, s: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Pixel positions (..., 2) of eye coordinates (s, t)."""
        return self.origin + (s * self.half_length)[..., None] * self.axis + np.asarray(t)[..., None] * self.normal


def eye_frames(points: np.ndarray) -> list[EyeFrame]:
    """The subject's right and left EyeFrames of landmarks (478, 2|3) pixels."""
    return [EyeFrame.measure(points, *e) for e in _EYES]


def _ramp(x: np.ndarray) -> np.ndarray:
    return np.minimum(np.maximum(x, 0.0), 1.0)  # np.clip, without its ~4 us of Python dispatch


def _smooth(x: np.ndarray) -> np.ndarray:
    x = _ramp(x)
    return x * x * (3 - 2 * x)


def _sample(flow: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """The flow (S, S, 2) at pixel positions xy (..., 2), bilinear; (..., 2) float64."""
    m = np.ascontiguousarray(xy, np.float32).reshape(-1, 1, 2)
    out = cv2.remap(flow, m[..., 0], m[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(xy.shape).astype(np.float64)


def gaze_weights(driven: np.ndarray, source: np.ndarray) -> list[float]:
    """How much ``gaze.GazeMap`` replaces the spline inside each eye (right, left): its fade by lid gap."""
    out = []
    for _, _, upper, lower, _ in _EYES:
        ratio = lid_gap(driven, upper, lower) / max(lid_gap(source, upper, lower), 1e-6)
        out.append(float(smoothstep((ratio - CLOSED_LID_RATIO) / (OPEN_LID_RATIO - CLOSED_LID_RATIO))))
    return out


def slide_lids(flow: np.ndarray, driven: list[EyeFrame], source: list[EyeFrame], min_gap_px: float,
               iod_s: float, gaze: list[float] | None = None, edge_px: float = 1.0) -> None:
    """Correct a backward flow in place so that closing lids cover a still eyeball (module docstring).

    Per column across the eye (along its normal, in the frame of the corners), from LID_BAND of the
    way up to the brow down to LOWER_BAND below the lower lid: the lid skin above the margin is
    re-laid evenly from where the spline samples at the band's top down to the source's lash line
    (which lands exactly on the driven lid margin); the opening shows the still eyeball; below the
    lower lid the source's lower-lid skin runs back into the spline.
    Args: flow (S, S, 2) float32, output pixel -> source pixel (x, y), modified in place; driven,
    source: the EyeFrames of the driven and the source landmarks (same eye order); min_gap_px: the
    smallest lid gap of the driven face, pixels (a slit this narrow shows only the lash line); iod_s:
    the source's interocular distance, pixels; gaze: per eye, how much the gaze map (gaze.py, applied
    before) already holds the eyeball inside the opening (its rigid iris disc under the lids): the
    opening is left to it that much, the lid skin and the lash line are laid either way; edge_px: width of the soft transition at each lid margin (antialiasing), pixels.
    """
    size = flow.shape[0]
    gaze = gaze if gaze is not None else [0.0] * len(driven)
    for d, s, g in zip(driven, source, gaze):
        k = s.half_length / d.half_length  # source pixels per driven pixel
        # The box of the eye's columns: corner to corner, band top to band bottom.
        ss = _COLUMNS
        up, lo = d.at(ss, "upper"), d.at(ss, "lower")
        gap_s = s.column_gaps
        if np.all(k * (lo - up) >= gap_s - 1e-6):
            continue  # no column closes: the spline's flow stands
        tops = up - LID_BAND * np.maximum(up - d.at(ss, "brow"), 0.0)
        bots = lo + LOWER_BAND * k * gap_s.max() + 1
        ext = np.concatenate([d.point(ss, tops), d.point(ss, bots)])
        # Clipped to the crop (np.minimum/np.maximum: np.clip's dispatch costs more than these (2,) arrays).
        x0, y0 = np.minimum(np.maximum(np.floor(ext.min(0)).astype(int) - 1, 0), size)
        x1, y1 = np.minimum(np.maximum(np.ceil(ext.max(0)).astype(int) + 2, 0), size)
        if x1 <= x0 or y1 <= y0:
            continue
        rel = np.empty((y1 - y0, x1 - x0, 2))  # the box's pixels about the eye's origin (a meshgrid, broadcast)
        rel[..., 0] = np.arange(x0, x1, dtype=np.float64) - d.origin[0]
        rel[..., 1] = (np.arange(y0, y1, dtype=np.float64) - d.origin[1])[:, None]
        sd = rel @ d.axis / d.half_length
        td = rel @ d.normal
        up_d, lo_d, brow_d = d.at(sd, "upper"), d.at(sd, "lower"), d.at(sd, "brow")
        up_s, lo_s = s.at(sd, "upper"), s.at(sd, "lower")
        gap_d = lo_d - up_d
        gap_s = np.maximum(lo_s - up_s, 1e-6)
        top = up_d - LID_BAND * np.maximum(up_d - brow_d, 1.0)
        bot = lo_d + np.maximum(LOWER_BAND * gap_s / k, 1.0)
        # How much this column closes relative to the source's (0: as open or wider, 1: 30 % closed or more),
        # faded out at the corners and outside the band.
        w = _smooth((1.0 - k * gap_d / gap_s) / CLOSING_RAMP) * _smooth((1.0 - np.abs(sd)) / CORNER_TAPER)
        w *= (td > top) & (td < bot)
        if not w.any():
            continue
        box = flow[y0:y1, x0:x1]
        now = (box.astype(np.float64) - s.origin) @ s.normal  # where the spline samples, across the source eye
        at_top = (_sample(flow, d.point(sd, top)) - s.origin) @ s.normal
        at_bot = (_sample(flow, d.point(sd, bot)) - s.origin) @ s.normal
        # Lid skin: from the spline at the band's top down to the lash line, evenly.
        lid = at_top + (td - top) / np.maximum(up_d - top, 1e-6) * (up_s - at_top)
        # Opening: the still eyeball; near closure the lash line covers the last of the slit.
        lash_s = np.minimum(LASH_IOD * iod_s, gap_s / 2)  # the source's lash line under its lid margin
        eyeball = np.clip(k * td, up_s + lash_s, lo_s)
        shown = _smooth((gap_d - min_gap_px) / ((SLIT_GAPS - 1.0) * max(min_gap_px, 1e-6)))
        margin = up_d + np.maximum(gap_d * (1.0 - shown), np.minimum(lash_s / k, gap_d))
        lash = up_s + _ramp((td - up_d) / np.maximum(margin - up_d, 1e-6)) * lash_s
        opening = lash + _ramp((td - margin) / edge_px) * (eyeball - lash)
        lower_margin = lo_s + (1.0 - shown) * 0.5 * lash_s  # a shut eye's lower lid starts at its skin, not the white
        # (A shut eye meets its lower lid without a ramp: a ramp in the flow would sweep the eyeball's white.)
        lower_edge = np.maximum(edge_px * shown, 1e-3)
        opening += _ramp((td - (lo_d - lower_edge)) / lower_edge) * (lower_margin - opening)
        # Lower lid skin: from the lower lid's margin back into the spline.
        below = lower_margin + (td - lo_d) / np.maximum(bot - lo_d, 1e-6) * (at_bot - lower_margin)
        target = np.where(td < up_d, lid, np.where(td <= lo_d, opening, below))
        w = np.where((td >= up_d) & (td <= lo_d), w * (1.0 - g), w)
        box += (w * (target - now))[..., None].astype(np.float32) * s.normal.astype(np.float32)


def min_lid_gap_px(points: np.ndarray) -> float:
    """The smallest lid gap ``motion.clamp_closures`` keeps, in the pixels of landmarks (478, 2|3)."""
    return MIN_LID_GAP * topo.interocular_distance(points)
