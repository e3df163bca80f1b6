"""An invisible, crop- and scale-tolerant watermark in the luma of a frame.

Scheme (spread spectrum, tiled): a tile of ``TILE_CELLS`` x ``TILE_CELLS`` chips, each +-1, is
drawn from a key fixed by enliven. ``SYNC_CHIPS`` of them are a known pseudo-noise pattern (the
sync field); the others carry the 132 coded bits of the payload (``payload.py``), each bit on
one or two chips, each chip multiplied by its own pseudo-noise sign. A chip covers ``cell`` x
``cell`` pixels, where ``cell`` grows with the frame (4 px up to a short side of 1023 px, 8 px up
to 2047, ...), and the tile repeats over the whole frame from its top-left corner. The pattern,
weighted by a mask that is larger where the picture is busy (where the eye misses it), is added
to the luma (R, G and B move together, chroma is untouched), capped so the frame keeps a
PSNR of at least ``min_psnr_db``.

Detection never needs the original: the luma's high-pass residual, normalised by its local
contrast, is scaled by each hypothesis of the cell size (the sizes embed uses, and their halves
and three-quarters), folded modulo the tile period (every tile's copy summed, which is what makes
a crop work: any window that holds about one tile holds every chip), and cross-correlated with
the sync field over every cyclic offset by FFT. The best offset's score, in standard deviations
of all offsets' scores, is ``sync_z``; the chips read at that offset are de-spread, Viterbi
decoded and checked by the CRC. A frame counts as watermarked only when the CRC checks and the
sync score clears ``SYNC_Z_MIN``.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import NamedTuple

import cv2
import numpy as np

from enliven.engine.errors import ShapeError
from enliven.provenance.payload import CODED_BITS, Payload, conv_encode, new_session_id, viterbi_decode

KEY = b"enliven-watermark-v1"  # seeds the chip layout and signs; changing it orphans every mark made
TILE_CELLS = 16  # chips per tile side (256 chips)
SYNC_CHIPS = 48  # chips of the tile that hold the known sync pattern
BASE_CELL_PX = 4  # chip side, pixels, in frames whose short side is under 1024 px
SYNC_Z_MIN = 5.0  # a detection needs the sync peak this many standard deviations above the other offsets
# Cell sizes the detector tries, in pixels of the frame it is given: what embed uses for frames up
# to 8k, halves and three-quarters of them (a frame scaled down), and 3/2 of 4 (scaled up).
DETECT_CELLS_PX = (2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 48.0, 64.0)
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # BT.601 weights, R G B


@dataclass(frozen=True)
class WatermarkConfig:
    strength: float = 5.0  # luma amplitude of a chip where the mask is 1, 8-bit levels (before the PSNR cap)
    mask_floor: float = 0.7  # mask in flat areas (fraction of strength)
    mask_ceiling: float = 1.6  # mask in busy areas
    contrast_ref: float = 12.0  # local luma standard deviation (8-bit levels) at which the mask is 1
    min_psnr_db: float = 40.5  # the mark is scaled down when it would bring the frame below this
    informed: bool = True  # offset the host picture's own projection on each bit (see embed_delta)
    gain_range: tuple[float, float] = (0.4, 2.5)  # bounds of the informed per-bit gain


class _Layout(NamedTuple):
    sync_index: np.ndarray  # (SYNC_CHIPS,) int, flat chip indices of the sync field
    data_index: np.ndarray  # (TILE_CELLS**2 - SYNC_CHIPS,) int, flat chip indices of data
    data_bit: np.ndarray  # (same,) int, which coded bit each data chip carries
    signs: np.ndarray  # (TILE_CELLS**2,) float32 +-1, the pseudo-noise sign of each chip


def _layout() -> _Layout:
    seed = int.from_bytes(hashlib.sha256(KEY).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    order = rng.permutation(TILE_CELLS * TILE_CELLS)
    data_index = order[SYNC_CHIPS:]
    signs = rng.choice(np.array([-1.0, 1.0], np.float32), TILE_CELLS * TILE_CELLS)
    return _Layout(order[:SYNC_CHIPS], data_index, np.arange(len(data_index)) % CODED_BITS, signs)


LAYOUT = _layout()


def cell_px_for(height: int, width: int) -> int:
    """The chip side, pixels, that embed uses in a frame of this size: 4 px below a short side of 1024
    (256 and 512 crops, most photos), then doubling with each doubling of the short side."""
    short = min(height, width)
    cell = BASE_CELL_PX
    while short >= 1024 * cell // BASE_CELL_PX:
        cell *= 2
    return cell


def tile_chips(payload: Payload) -> np.ndarray:
    """(TILE_CELLS, TILE_CELLS) float32 +-1: the chips of one tile carrying ``payload``."""
    coded = 2.0 * conv_encode(payload.to_bits()).astype(np.float32) - 1.0
    chips = LAYOUT.signs.copy()
    chips[LAYOUT.data_index] *= coded[LAYOUT.data_bit]
    return chips.reshape(TILE_CELLS, TILE_CELLS)


def watermark_pattern(payload: Payload, height: int, width: int) -> np.ndarray:
    """(height, width) float32 +-1: the tiled chip pattern of ``payload`` for a frame of this size."""
    cell = cell_px_for(height, width)
    tile = np.kron(tile_chips(payload), np.ones((cell, cell), np.float32))
    period = TILE_CELLS * cell
    reps = (-(-height // period), -(-width // period))
    return np.ascontiguousarray(np.tile(tile, reps)[:height, :width])


def luma(frame: np.ndarray) -> np.ndarray:
    """(H, W) float32 luma, 8-bit levels, of an (H, W, 3) uint8 RGB frame (or (H, W) gray)."""
    if frame.ndim == 2:
        return frame.astype(np.float32)
    return (frame.astype(np.float32) @ _LUMA).astype(np.float32, copy=False)


def _check_frame(frame: np.ndarray) -> None:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        got = f"{frame.shape} {frame.dtype}" if isinstance(frame, np.ndarray) else type(frame).__name__
        raise ShapeError(f"expected an (H, W, 3) uint8 RGB frame; got {got}")
    if min(frame.shape[:2]) < 16:
        raise ShapeError(f"expected a frame of at least 16x16 px; got {frame.shape[1]}x{frame.shape[0]}")


def embed_delta(frame: np.ndarray, pattern: np.ndarray, config: WatermarkConfig = WatermarkConfig()) -> np.ndarray:
    """(H, W) float32: the luma change that marks ``frame`` with ``pattern`` (masked, informed, capped).

    Informed embedding: the detector's chip readout of the unmarked frame (at the frame's own
    scale, tile at the origin) is known here, so each coded bit's and each sync chip's amplitude
    is set so that the host picture's own projection on it is offset: bits the picture already
    pushes the right way get less, bits it pushes the wrong way get more (``gain_range``).
    Full-frame steps are float32 OpenCV passes (the frame path runs this on every output frame).
    """
    y = luma(frame)
    h, w = y.shape
    cell = cell_px_for(h, w)
    highpass = _highpass(y, cell)
    scale = _residual_scale(highpass, cell)  # local contrast of the detail, + 1
    mask = np.multiply(scale, np.float32(1.0 / config.contrast_ref))
    mask = cv2.min(cv2.max(mask, config.mask_floor, dst=mask), config.mask_ceiling, dst=mask)
    delta = cv2.multiply(mask, pattern, scale=config.strength)
    if config.informed:
        gain = _informed_gain(cv2.divide(highpass, scale), delta, scale, pattern, cell, config)
        delta = cv2.multiply(delta, _expand_tile(gain, h, w, cell), dst=delta)
    # PSNR cap on the rounded change (the RGB error equals it: all three channels move by it).
    cap = 255.0 * 10 ** (-config.min_psnr_db / 20)
    for _ in range(2):
        rms = cv2.norm(np.rint(delta), cv2.NORM_L2) / np.sqrt(delta.size)
        if rms <= cap:
            break
        delta *= np.float32(cap / rms * 0.995)
    return delta


def _informed_gain(r_host: np.ndarray, delta: np.ndarray, scale: np.ndarray, pattern: np.ndarray, cell: int,
                   config: WatermarkConfig) -> np.ndarray:
    """(TILE_CELLS, TILE_CELLS) float32 gain per chip of the tile offsetting the host's readout.

    Args: r_host, the detector's residual of the unmarked luma; delta, the masked pattern; scale,
        the residual's local contrast (all (H, W) float32).
    """
    period = TILE_CELLS * cell
    host = _chip_sums(_fold(r_host, period), cell)
    mark = _chip_sums(_fold(cv2.divide(_highpass(delta, cell), scale), period), cell)
    tile = (pattern[:period, :period] if pattern.shape[0] >= period and pattern.shape[1] >= period
            else None)
    signs = _tile_signs(pattern, cell, period) if tile is None else tile[::cell, ::cell].reshape(-1)
    host_s, mark_s = host * signs, mark * signs  # > 0: helps the right sign
    gain = np.ones(TILE_CELLS * TILE_CELLS, np.float32)
    lo, hi = config.gain_range
    # Data: per coded bit (its chips share one gain); sync: per chip.
    d = LAYOUT.data_index
    hb = np.bincount(LAYOUT.data_bit, weights=host_s[d], minlength=CODED_BITS)
    mb = np.bincount(LAYOUT.data_bit, weights=mark_s[d], minlength=CODED_BITS)
    target = float(np.mean(mb))
    gb = np.clip((target - hb) / np.maximum(mb, 1e-6 * max(target, 1e-6)), lo, hi)
    gain[d] = gb[LAYOUT.data_bit]
    s = LAYOUT.sync_index
    target_s = float(np.mean(mark_s[s]))
    gain[s] = np.clip((target_s - host_s[s]) / np.maximum(mark_s[s], 1e-6 * max(target_s, 1e-6)), lo, hi)
    return gain.reshape(TILE_CELLS, TILE_CELLS)


def _expand_tile(chips: np.ndarray, height: int, width: int, cell: int) -> np.ndarray:
    """(height, width) float32: a (TILE_CELLS, TILE_CELLS) per-chip value repeated over its cells and tiles."""
    tile = np.repeat(np.repeat(chips, cell, axis=0), cell, axis=1)
    period = TILE_CELLS * cell
    return cv2.repeat(tile, -(-height // period), -(-width // period))[:height, :width]


def _tile_signs(pattern: np.ndarray, cell: int, period: int) -> np.ndarray:
    """(TILE_CELLS**2,) chip signs of a pattern smaller than one tile (padded by its own period)."""
    reps = (-(-period // pattern.shape[0]), -(-period // pattern.shape[1]))
    return np.tile(pattern, reps)[:period:cell, :period:cell].reshape(-1)


def embed(frame: np.ndarray, payload: Payload, config: WatermarkConfig = WatermarkConfig(),
          *, pattern: np.ndarray | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """The frame with ``payload`` watermarked into it.

    Args: frame (H, W, 3) uint8 RGB; pattern: watermark_pattern(payload, H, W) if already made;
        out: where to write (may be ``frame`` itself), else a new array.
    Returns: (H, W, 3) uint8 RGB.
    Raises: ShapeError for anything but an (H, W, 3) uint8 frame of at least 16x16.
    """
    _check_frame(frame)
    h, w = frame.shape[:2]
    if pattern is None:
        pattern = watermark_pattern(payload, h, w)
    elif pattern.shape != (h, w):
        raise ShapeError(f"expected a ({h}, {w}) pattern for this frame; got {pattern.shape}")
    delta = embed_delta(frame, pattern, config)
    # clip(frame + rint(delta)) as two saturating uint8 passes: a pixel's change is either up or down.
    # (convertScaleAbs rounds half to even, as np.rint does.)
    up = cv2.cvtColor(cv2.convertScaleAbs(cv2.max(delta, 0.0)), cv2.COLOR_GRAY2RGB)
    down = cv2.cvtColor(cv2.convertScaleAbs(cv2.min(delta, 0.0)), cv2.COLOR_GRAY2RGB)
    if out is None:
        out = np.empty_like(frame)
    cv2.add(frame, up, dst=out)
    cv2.subtract(out, down, dst=out)
    return out


@dataclass
class Watermarker:
    """Marks every frame of one session (or one file) with the same random session id.

    ``embed(frame)`` is what a per-frame routine calls; patterns are made once per frame size.
    """

    config: WatermarkConfig = WatermarkConfig()
    payload: Payload = field(default_factory=lambda: Payload(new_session_id()))
    _patterns: dict[tuple[int, int], np.ndarray] = field(default_factory=dict, repr=False)

    def pattern(self, height: int, width: int) -> np.ndarray:
        key = (height, width)
        if key not in self._patterns:
            if len(self._patterns) >= 4:
                self._patterns.clear()
            self._patterns[key] = watermark_pattern(self.payload, height, width)
        return self._patterns[key]

    def embed(self, frame: np.ndarray, *, in_place: bool = False) -> np.ndarray:
        """Watermark one (H, W, 3) uint8 RGB frame; ``in_place`` writes into ``frame`` and returns it."""
        _check_frame(frame)
        pattern = self.pattern(*frame.shape[:2])
        return embed(frame, self.payload, self.config, pattern=pattern, out=frame if in_place else None)


# ------------------------------------------------------------------------------------ detection


@dataclass(frozen=True)
class Detection:
    """What the detector read from one frame."""

    payload: Payload | None  # the decoded payload when its CRC checks and the sync cleared SYNC_Z_MIN
    sync_z: float  # the sync peak, in standard deviations of all offsets' scores
    bit_agreement: float  # fraction of the received coded chips that agree with the decoded code word (0.5 = chance)
    cell_px: float  # chip side, pixels of the given frame, of the best hypothesis
    offset_px: tuple[int, int]  # (y, x) of the tile's origin, pixels at the detector's scale
    soft_bits: np.ndarray  # (CODED_BITS,) float32, normalised soft coded bits (for combining frames)

    @property
    def found(self) -> bool:
        return self.payload is not None

    @property
    def confidence(self) -> float:
        """0..1: 0 at chance agreement of the received chips with the decoded code word, 1 at full."""
        return 0.0 if self.payload is None else float(np.clip(2 * self.bit_agreement - 1, 0, 1))


def _highpass(y: np.ndarray, cell: float) -> np.ndarray:
    k = int(round(cell + 1)) | 1
    return y - cv2.blur(y, (k, k))


def _residual_scale(highpass: np.ndarray, cell: float) -> np.ndarray:
    """(H, W) float32: 1 + the local RMS of a high-passed luma (window about a tile's quarter)."""
    c = max(int(round(4 * cell)), 5) | 1
    power = cv2.blur(cv2.multiply(highpass, highpass), (c, c))
    return cv2.add(cv2.sqrt(cv2.max(power, 0.0, dst=power), dst=power), 1.0, dst=power)


def residual(y: np.ndarray, cell: float) -> np.ndarray:
    """(H, W) float32: high-pass of luma ``y`` for chips of ``cell`` px, divided by the local contrast."""
    r = _highpass(y, cell)
    return r / _residual_scale(r, cell)


def _fold(r: np.ndarray, period: int) -> np.ndarray:
    """(period, period): r summed modulo the period in both axes (tile copies added up)."""
    h, w = r.shape
    ph, pw = -(-h // period) * period, -(-w // period) * period
    if (ph, pw) == (h, w):
        padded = r
    else:
        padded = np.zeros((ph, pw), np.float32)
        padded[:h, :w] = r
    return padded.reshape(ph // period, period, pw // period, period).sum(axis=(0, 2))


_SYNC_TILE = np.zeros(TILE_CELLS * TILE_CELLS, np.float32)
_SYNC_TILE[LAYOUT.sync_index] = LAYOUT.signs[LAYOUT.sync_index]
_SYNC_TILE = _SYNC_TILE.reshape(TILE_CELLS, TILE_CELLS)


def _chip_sums(tile: np.ndarray, cell: int) -> np.ndarray:
    """(TILE_CELLS**2,) float32: a (period, period) folded residual summed over each chip's cell."""
    return tile.reshape(TILE_CELLS, cell, TILE_CELLS, cell).sum(axis=(1, 3)).reshape(-1)


def _read_chips(folded: np.ndarray, offset: tuple[int, int]) -> np.ndarray:
    """(TILE_CELLS**2,) float32 chip sums of the folded residual whose tile starts at ``offset``."""
    cell = folded.shape[0] // TILE_CELLS
    return _chip_sums(np.roll(folded, (-offset[0], -offset[1]), axis=(0, 1)), cell)


def _hypothesis(y: np.ndarray, cell: float) -> tuple[float, tuple[int, int], np.ndarray]:
    """(sync_z, offset, chip values) of the best cyclic offset for chips of ``cell`` px."""
    scale = BASE_CELL_PX / cell
    if scale != 1.0:
        size = (max(int(round(y.shape[1] * scale)), 1), max(int(round(y.shape[0] * scale)), 1))
        y = cv2.resize(y, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    r = residual(y, BASE_CELL_PX)
    period = TILE_CELLS * BASE_CELL_PX
    folded = _fold(r, period)
    template = np.kron(_SYNC_TILE, np.ones((BASE_CELL_PX, BASE_CELL_PX), np.float32))
    score = np.fft.irfft2(np.fft.rfft2(folded) * np.conj(np.fft.rfft2(template)), s=folded.shape)
    k = int(np.argmax(score))
    offset = (k // period, k % period)
    z = float((score.flat[k] - score.mean()) / (score.std() + 1e-12))
    return z, offset, _read_chips(folded, offset)


def detect(frame: np.ndarray, cells_px: tuple[float, ...] = DETECT_CELLS_PX) -> Detection:
    """Look for an enliven watermark in one frame.

    Args: frame (H, W, 3) uint8 RGB, any size of at least 16x16 (a crop, a scaled copy...);
        cells_px: the chip sides to try, pixels (default: all that embed makes, and scaled ones);
            those under half the cell embed would use at this frame's size are skipped (a frame
            scaled down by more than 2 is not read; this keeps large frames quick).
    Returns: the Detection of the hypothesis that decoded (the one with the best sync otherwise).
    """
    _check_frame(frame)
    y = luma(frame)
    short = min(y.shape)
    smallest = cell_px_for(*y.shape) / 2  # a frame made at this size, or scaled down by up to 2 (or cropped)
    best: Detection | None = None
    for cell in cells_px:
        if short < cell * TILE_CELLS * 0.75 or cell < smallest:  # under 3/4 of a tile, or cells never made
            continue
        z, offset, chips = _hypothesis(y, cell)
        soft = _despread(chips)
        decoded = _decode(soft) if z >= SYNC_Z_MIN else None
        agreement = _agreement(chips, decoded)
        detection = Detection(decoded, z, agreement, cell, offset, soft)
        if best is None or (detection.found, detection.sync_z) > (best.found, best.sync_z):
            best = detection
    if best is None:
        return Detection(None, 0.0, 0.5, 0.0, (0, 0), np.zeros(CODED_BITS, np.float32))
    return best


def _despread(chips: np.ndarray) -> np.ndarray:
    """(CODED_BITS,) float32 soft coded bits from chip values: de-spread, summed, unit RMS."""
    values = chips[LAYOUT.data_index] * LAYOUT.signs[LAYOUT.data_index]
    soft = np.bincount(LAYOUT.data_bit, weights=values, minlength=CODED_BITS).astype(np.float32)
    rms = float(np.sqrt(np.mean(soft * soft)))
    return soft / rms if rms > 0 else soft


def _decode(soft: np.ndarray) -> Payload | None:
    return Payload.from_bits(viterbi_decode(soft))


def _agreement(chips: np.ndarray, payload: Payload | None) -> float:
    """Fraction of data and sync chips whose sign matches the decoded tile (0.5 when nothing decoded)."""
    if payload is None:
        return 0.5
    expected = tile_chips(payload).reshape(-1)
    return float(np.mean(np.sign(chips) == expected))


def decode_soft(soft: np.ndarray) -> Payload | None:
    """The payload of soft coded bits (e.g. several frames' Detection.soft_bits added up), None if the CRC fails."""
    if soft.shape != (CODED_BITS,):
        raise ShapeError(f"expected ({CODED_BITS},) soft bits; got {soft.shape}")
    return _decode(soft)
