"""Thin-plate spline: coefficients solved in float64, evaluated in float32 at many points per frame.

U(r) = r^2 log r^2. The solve is a small dense system (a few hundred control points). The
evaluation is the per-frame cost of the warp: M points x N control points kernel values. It runs
in a centred, scaled frame (coordinates about the crop's middle, in half-crops): the kernel's
terms are then a few units instead of ~1e6 px^2, so float32 rounds ~10x less of them away; the
part that scaling moves into r^2 log(scale^2) sums to a constant under the spline's side
conditions and is added back exactly. Per chunk of points, the squared distances are one
float32 matmul of augmented coordinates ([x, y, |q|^2, 1] against [-2cx, -2cy, 1, |c|^2]); log
and product run in OpenCV (one pass each, no temporaries). Control points that never move (the
crop's border anchors) have their kernel columns at fixed points computed once.
"""
from __future__ import annotations

import cv2
import numpy as np

from .errors import ShapeError

CHUNK_POINTS = 512  # points per pass of the kernel (its two buffers, ~0.5 MB each, stay in cache between passes)
_TINY = 1e-12  # squared distance (scaled units) below which U is taken at this value (~0)


def tps_kernel(d2: np.ndarray) -> np.ndarray:
    """Thin-plate radial basis U = r^2 log r^2 from squared distances (0 at r = 0)."""
    return d2 * np.log(np.maximum(d2, 1e-12))


def solve_tps(dst: np.ndarray, src: np.ndarray, regularization: float = 1e-3,
              release: np.ndarray | None = None) -> np.ndarray:
    """Coefficients of the 2-D thin-plate spline f with f(dst[i]) ~= src[i].

    Args: dst, src (N, 2) float, pixels; regularization: smoothing relative to the mean kernel value;
    release: optional (N,) extra smoothing per point, same units (a large value lets point i go:
    the spline no longer has to pass through it). Returns (N + 3, 2) float64: N kernel weights then
    the affine part (constant, x, y).
    """
    if dst.shape != src.shape or dst.ndim != 2 or dst.shape[1] != 2:
        raise ShapeError(f"expected two (N, 2) arrays; got {dst.shape} and {src.shape}")
    n = len(dst)
    d = dst.astype(np.float64)
    a = np.zeros((n + 3, n + 3))
    # Squared distances |d_i|^2 + |d_j|^2 - 2 d_i.d_j (float64: ~1e-11 px^2), built in a contiguous buffer
    # (row broadcasts on a view of ``a`` run ~2x slower); the kernel's last pass writes into ``a``.
    d2 = np.matmul(d, d.T * -2.0)
    sq = (d * d).sum(1)
    d2 += sq[:, None]
    d2 += sq[None, :]
    np.maximum(d2, 1e-12, out=d2)
    k = a[:n, :n]
    u = np.log(d2)
    np.multiply(u, d2, out=k)
    scale = max(float(np.abs(k, out=u).mean()), 1e-9)
    diagonal = a.reshape(-1)[: n * (n + 4): n + 4]  # a view of k's diagonal
    diagonal += regularization * scale if release is None else (regularization + release) * scale
    a[:n, n] = a[n, :n] = 1.0
    a[:n, n + 1:] = d
    a[n + 1:, :n] = d.T
    b = np.zeros((n + 3, 2))
    b[:n] = src
    return np.linalg.solve(a, b)


class TpsEvaluator:
    """A spline evaluated at a fixed set of points (the warp's coarse grid), buffers reused per frame.

    Args: points (M, 2) pixels; centre (2,) and half (scalar) define the scaled frame (pixels: its
    origin and unit; the crop's middle and half its side keep coordinates within about +-1);
    fixed: optional (K, 2) control points that never move, whose kernel columns are computed once.
    """

    def __init__(self, points: np.ndarray, centre: np.ndarray, half: float,
                 fixed: np.ndarray | None = None) -> None:
        self.centre = np.asarray(centre, np.float64).reshape(2)
        self.half = float(half)
        q = (np.asarray(points, np.float64) - self.centre) / self.half
        self.points_scaled = q
        self._qa = _augmented_points(q)
        self.fixed = None if fixed is None else np.asarray(fixed, np.float64).copy()
        k = 0 if self.fixed is None else len(self.fixed)
        const = np.empty((len(q), 3 + k), np.float32)  # [1, x, y, U(fixed)] per point
        const[:, 0], const[:, 1:3] = 1.0, q
        if k:
            cf = (self.fixed - self.centre) / self.half
            const[:, 3:] = tps_kernel(((q[:, None, :] - cf[None]) ** 2).sum(-1))
        self._const = const
        self._work = TpsWorkspace()
        self._out = np.empty((len(q), 2), np.float32)

    def evaluate(self, coef: np.ndarray, dst: np.ndarray, fixed_at: int | None = None) -> np.ndarray:
        """f(points) (M, 2) float32 for coefficients (N + 3, 2) with centres ``dst`` (N, 2).

        ``fixed_at``: where the fixed control points sit in ``dst`` (rows fixed_at .. fixed_at + K); None
        when this evaluator has none. The result is a buffer this evaluator owns (valid until the next call).
        """
        moving = np.ones(len(dst), bool)
        if (self.fixed is None) != (fixed_at is None):
            raise ValueError("fixed_at is needed exactly when the evaluator has fixed control points")
        if self.fixed is not None and fixed_at is not None:
            where = slice(fixed_at, fixed_at + len(self.fixed))
            if not np.array_equal(dst[where], self.fixed):
                raise ValueError("dst does not hold this evaluator's fixed control points at fixed_at")
            moving[where] = False
        w, lin = _scaled_weights(coef, dst, self.centre, self.half)
        c = (dst[moving] - self.centre) / self.half
        wc = np.concatenate([lin, w[~moving]]).astype(np.float32)
        out = self._out
        _kernel_sum(self._qa, c, w[moving].astype(np.float32), out, self._work)
        out += self._const @ wc
        return out


def eval_tps(coef: np.ndarray, dst: np.ndarray, points: np.ndarray, centre: np.ndarray | None = None,
             half: float | None = None, work: TpsWorkspace | None = None) -> np.ndarray:
    """Evaluate the spline at ``points`` (M, 2) pixels; returns (M, 2) float32 (a new array).

    ``centre``/``half``: the scaled frame (see TpsEvaluator), by default the middle and half extent of
    the points and centres together; ``work``: buffers to reuse between calls.
    """
    points = np.asarray(points, np.float64)
    if centre is None or half is None:
        both = np.concatenate([points, np.asarray(dst, np.float64)])
        lo, hi = both.min(0), both.max(0)
        centre, half = (lo + hi) / 2, max(float((hi - lo).max()) / 2, 1.0)
    centre = np.asarray(centre, np.float64)
    w, lin = _scaled_weights(coef, dst, centre, half)
    q = (points - centre) / half
    out = np.empty((len(q), 2), np.float32)
    _kernel_sum(_augmented_points(q), (dst - centre) / half, w.astype(np.float32), out, work or TpsWorkspace())
    out += (q @ lin[1:] + lin[0]).astype(np.float32)
    return out


class TpsWorkspace:
    """Kernel buffers (rows x control points float32), grown as needed and reused."""

    def __init__(self) -> None:
        self.d2 = np.empty(0, np.float32)
        self.u = np.empty(0, np.float32)

    def get(self, rows: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        if self.d2.size < rows * n:
            self.d2 = np.empty(rows * (n + 16), np.float32)
            self.u = np.empty_like(self.d2)
        return self.d2[:rows * n].reshape(rows, n), self.u[:rows * n].reshape(rows, n)


def _augmented_points(q: np.ndarray) -> np.ndarray:
    """(M, 4) float32 [x, y, x^2 + y^2, 1] of scaled points (M, 2)."""
    out = np.empty((len(q), 4), np.float32)
    out[:, :2] = q
    out[:, 2] = q[:, 0] * q[:, 0] + q[:, 1] * q[:, 1]
    out[:, 3] = 1.0
    return out


def _scaled_weights(coef: np.ndarray, dst: np.ndarray, centre: np.ndarray, half: float
                    ) -> tuple[np.ndarray, np.ndarray]:
    """The spline in the scaled frame q' = (q - centre) / half: kernel weights (N, 2) and the affine part
    (3, 2) (constant, x', y'), float64, such that f(q) = sum_i w_i U(|q' - c'_i|^2) + lin[0] + q' @ lin[1:].

    U(h^2 r'^2) = h^2 U(r'^2) + h^2 log(h^2) r'^2, and sum_i w_i r'_i^2 = sum_i w_i |c'_i|^2 (a constant)
    because the weights satisfy sum w = 0 and sum w c = 0.
    """
    n = len(dst)
    if coef.shape != (n + 3, 2):
        raise ShapeError(f"expected ({n + 3}, 2) coefficients for {n} control points; got {coef.shape}")
    h2 = half * half
    w = coef[:n]
    c = (np.asarray(dst, np.float64) - centre) / half
    const = h2 * np.log(h2) * ((c * c).sum(1) @ w)
    lin = np.empty((3, 2))
    lin[0] = coef[n] + centre @ coef[n + 1:] + const
    lin[1:] = half * coef[n + 1:]
    return h2 * w, lin


def _kernel_sum(qa: np.ndarray, c: np.ndarray, w: np.ndarray, out: np.ndarray, work: TpsWorkspace) -> None:
    """out (M, 2) float32 = sum_i w_i U(|q - c_i|^2) for augmented points qa (M, 4), centres c (N, 2), w (N, 2)."""
    n = len(c)
    if n == 0:
        out[:] = 0.0
        return
    ca = np.empty((4, n), np.float32)
    ca[0], ca[1] = -2.0 * c[:, 0], -2.0 * c[:, 1]
    ca[2], ca[3] = 1.0, (c * c).sum(1)
    for r0 in range(0, len(qa), CHUNK_POINTS):
        r1 = min(r0 + CHUNK_POINTS, len(qa))
        d2, u = work.get(r1 - r0, n)
        np.matmul(qa[r0:r1], ca, out=d2)
        d2 = cv2.max(d2, _TINY, dst=d2)  # rounding can make a squared distance slightly negative
        u = cv2.log(d2, dst=u)
        u = cv2.multiply(u, d2, dst=u)
        np.matmul(u, w, out=out[r0:r1])
