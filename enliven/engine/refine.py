"""Running a trained refiner on frames: its inputs, the per-photo/per-frame runner, the delta.

Torch-free: the runner calls two ``runtime.Model`` objects (source encoder, per-frame decoder),
run by ONNX Runtime (the default, exported and cached by ``enliven.export``) or by torch;
``enliven.export.runner.open_runner`` builds one for the shipped weights.
The same ``refiner_inputs`` makes the training pairs and the runtime's inputs, so both see
the same pixels. Graph inputs are float32 NCHW in [0, 1]:

    encoder: source (N, 3, R, R) -> code (N, C)
    decoder: warped (N, 3, R, R), drawing (N, 3, R, R), gate (N, 1, R, R), code (N, C)
             -> delta (N, 3, R, R) image units, mask (N, 1, R, R)
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import cv2
import numpy as np

from . import topology as topo
from .errors import ShapeError
from .render import draw_landmarks
from .runtime import Model

log = logging.getLogger(__name__)

Backend = Literal["onnxruntime", "torch"]
Precision = Literal["fp32", "fp16", "int8"]
ENCODER_INPUTS, ENCODER_OUTPUTS = ("source",), ("code",)
DECODER_INPUTS, DECODER_OUTPUTS = ("warped", "drawing", "gate", "code"), ("delta", "mask")


def scale_points(points: np.ndarray, factor: float) -> np.ndarray:
    """Landmarks in pixels of an image resized by ``factor`` (pixel-centre convention of cv2.resize).

    Args: points (..., D) float, pixels; only x and y (and z, scaled like them) change.
    """
    out = np.asarray(points, np.float64).copy()
    out[..., :2] = (out[..., :2] + 0.5) * factor - 0.5
    if out.shape[-1] > 2:
        out[..., 2] = out[..., 2] * factor
    return out


FACE_GATE_SCALE = 1.12  # the gate covers the face oval grown by this about its centre
FACE_GATE_BLUR = 0.04  # feather of the gate, fraction of the side


def face_gate(points: np.ndarray, size_px: int) -> np.ndarray:
    """Where the refiner may act: the face oval grown a little, feathered. (S, S) float32 in [0, 1].

    Args: points (478, 2|3) pixels of the (S, S) image.
    """
    oval = np.asarray(points, np.float64)[topo.FACE_OVAL, :2]
    centre = oval.mean(axis=0)
    poly = centre + (oval - centre) * FACE_GATE_SCALE
    mask = np.zeros((size_px, size_px), np.uint8)
    cv2.fillPoly(mask, [np.round(poly * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
    k = max(3, int(round(FACE_GATE_BLUR * size_px)) | 1)
    return cv2.GaussianBlur(mask, (k, k), 0).astype(np.float32) / 255.0


class RefinerInputs(NamedTuple):
    """The refiner's per-frame inputs at its resolution R, as numpy (HWC) images."""

    warped: np.ndarray  # (R, R, 3) uint8
    drawing: np.ndarray  # (R, R, 3) uint8
    gate: np.ndarray  # (R, R) float32 in [0, 1]
    points: np.ndarray  # (478, 3) float64, driven landmarks in R pixels


def refiner_inputs(warped_crop: np.ndarray, driven_points: np.ndarray, resolution_px: int) -> RefinerInputs:
    """Bring a warped crop (S, S, 3) uint8 and its driven landmarks (478, 3) crop pixels to the refiner."""
    if warped_crop.ndim != 3 or warped_crop.shape[0] != warped_crop.shape[1] or warped_crop.shape[2] != 3:
        raise ShapeError(f"expected a square (S, S, 3) crop; got {warped_crop.shape}")
    s = warped_crop.shape[0]
    r = resolution_px
    small = warped_crop if s == r else cv2.resize(warped_crop, (r, r), interpolation=cv2.INTER_AREA)
    pts = scale_points(driven_points, r / s)
    return RefinerInputs(small, draw_landmarks(pts, r), face_gate(pts, r), pts)


def nchw(image: np.ndarray) -> np.ndarray:
    """(H, W, C) uint8 or (H, W) float -> (1, C, H, W) float32, uint8 scaled to [0, 1]."""
    a = np.asarray(image)
    if a.ndim == 2:
        a = a[..., None]
    if a.dtype == np.uint8 and a.shape[2] > 1:  # an image: its planes by cv2.split, ~2x faster than numpy's copy
        out = np.empty((1, a.shape[2]) + a.shape[:2], np.float32)
        for c, plane in enumerate(cv2.split(a)):
            out[0, c] = plane
    else:
        out = np.ascontiguousarray(a.transpose(2, 0, 1)[None], dtype=np.float32)
    if image.dtype == np.uint8:
        out *= 1.0 / 255.0
    return out


def decoder_feed(inputs: list[RefinerInputs], codes: np.ndarray) -> dict[str, np.ndarray]:
    """Stack per-frame inputs (and their photos' codes (N, C) float32) into one decoder batch."""
    return {"warped": batch([nchw(i.warped) for i in inputs]),
            "drawing": batch([nchw(i.drawing) for i in inputs]),
            "gate": batch([nchw(i.gate) for i in inputs]),
            "code": np.ascontiguousarray(codes, dtype=np.float32)}


def batch(arrays: list[np.ndarray]) -> np.ndarray:
    """Arrays (1, ...) concatenated along the first axis; a single one as it is (no copy: a session's own frame)."""
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


_LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # BT.601
CHROMA_QUANTILE = 99.0  # the photo's chroma budget is this percentile of its crop's |Cb| + |Cr|


def _cb_cr(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return -0.168736 * r - 0.331264 * g + 0.5 * b, 0.5 * r - 0.418688 * g - 0.081312 * b


def chroma_budget(source_crop: np.ndarray) -> float:
    """How much colour the photo itself has: the CHROMA_QUANTILE-th percentile of |Cb| + |Cr| of its crop.

    Args: source_crop (S, S, 3) uint8 RGB. Returns image units ([0, 1] scale): ~0 for a black-and-white
    photo, ~0.1-0.2 for a colour portrait.
    """
    small = source_crop[::2, ::2].astype(np.float32) * (1.0 / 255.0)
    cb, cr = _cb_cr(small)
    return float(np.percentile(np.abs(cb) + np.abs(cr), CHROMA_QUANTILE))


def limit_chroma(delta: np.ndarray, budget: float) -> np.ndarray:
    """The delta (R, R, 3) float32 with its chroma (|dCb| + |dCr|) capped per pixel at ``budget``, luma kept.

    The refiner may only add as much colour as the photo has: on a grey photo its delta becomes
    luminance only (no pink lids or lips), on a colour photo the cap rarely binds. In place; returns delta.
    Per channel plane, not with (R, R, 1) broadcasts: those run a 3-element inner loop (~4x slower).
    """
    luma = delta @ _LUMA
    cb, cr = _cb_cr(delta)
    size = np.abs(cb) + np.abs(cr)
    scale = np.minimum(1.0, budget / np.maximum(size, 1e-6))
    for c in range(3):
        plane = delta[..., c]
        plane -= luma
        plane *= scale
        plane += luma
    return delta


def interleaved(image: np.ndarray) -> np.ndarray:
    """An (H, W, C) image C-contiguous, as OpenCV takes it. A decoder's planar output viewed as HWC is
    interleaved by cv2.merge: ~25x faster than the copy numpy (or OpenCV's binding) makes of it."""
    if image.flags.c_contiguous:
        return image
    return cv2.merge([image[..., c] for c in range(image.shape[2])])


def apply_delta(warped_crop: np.ndarray, delta: np.ndarray, chroma: float | None = None) -> np.ndarray:
    """Warp (S, S, 3) uint8 plus a delta (R, R, 3) float32 in image units upsampled to S; uint8.

    ``chroma``: the photo's ``chroma_budget`` (None: no cap), applied to the delta before upsampling.
    """
    if chroma is not None:
        delta = limit_chroma(np.array(delta, np.float32), chroma)
    s = warped_crop.shape[0]
    up = cv2.resize(interleaved(delta), (s, s), interpolation=cv2.INTER_LINEAR) if delta.shape[0] != s \
        else np.array(delta)
    up *= 255.0  # in place: one (S, S, 3) float32 buffer less per frame
    out = warped_crop.astype(np.float32)
    out += up
    flat = out.reshape(s, -1)  # one channel: a Python scalar in cv2.max/min would reach the first channel only
    cv2.min(cv2.max(flat, 0.0, dst=flat), 255.0, dst=flat)  # = np.clip(out, 0, 255), one fast pass each
    return out.astype(np.uint8)


@dataclass
class GeneratorRunner:
    """Runs a trained refiner on the frames of one photo; the source code is computed once.

    ``prepare(source_crop)`` once per photo, then ``refine(warped_crop, driven_points)`` per frame.
    ``encoder`` and ``decoder`` are runtime Models (ONNX Runtime or torch) with the names above.
    """

    encoder: Model
    decoder: Model
    resolution_px: int
    code: np.ndarray | None = field(default=None, init=False, repr=False)  # (1, C) float32
    chroma: float | None = field(default=None, init=False)  # the photo's chroma_budget (image units)

    @property
    def provider(self) -> str:
        return self.decoder.provider

    def prepare(self, source_crop: np.ndarray) -> None:
        """Encode the source crop (S, S, 3) uint8 once."""
        r = self.resolution_px
        small = source_crop if source_crop.shape[0] == r else cv2.resize(source_crop, (r, r),
                                                                          interpolation=cv2.INTER_AREA)
        self.code = self.encoder(source=nchw(small))["code"]
        self.chroma = chroma_budget(source_crop)

    def refine(self, warped_crop: np.ndarray, driven_points: np.ndarray) -> np.ndarray:
        """The refined crop (S, S, 3) uint8: warp + the refiner's delta upsampled to S."""
        if self.code is None:
            raise RuntimeError("call prepare(source_crop) before refine()")
        return refine_batch(self.decoder, self.resolution_px, [warped_crop], [driven_points], self.code,
                            [self.chroma])[0]


def refine_batch(decoder: Model, resolution_px: int, crops: list[np.ndarray], points: list[np.ndarray],
                 codes: np.ndarray, chroma: list[float | None] | None = None) -> list[np.ndarray]:
    """Refine frames of several photos in one decoder call (sessions batched by the server).

    Args: crops: N warped crops (S_i, S_i, 3) uint8; points: their driven landmarks (478, 3);
    codes: (N, C) float32, each frame's photo code; chroma: each photo's ``chroma_budget`` (None: no cap).
    Returns N refined crops (S_i, S_i, 3) uint8.
    """
    inputs = [refiner_inputs(c, p, resolution_px) for c, p in zip(crops, points)]
    delta = decoder(**decoder_feed(inputs, codes))["delta"]
    budgets = chroma if chroma is not None else [None] * len(crops)
    return [apply_delta(c, d.transpose(1, 2, 0), b) for c, d, b in zip(crops, delta, budgets)]
