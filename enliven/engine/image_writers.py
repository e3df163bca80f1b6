"""Image outputs of the offline CLI: an animated GIF for sharing, and a folder of PNG frames.

Both take the frames ``video_io.VideoWriter`` takes ((H, W, 3) uint8 RGB, one size), carry the
synthetic-media disclosure (``DISCLOSURE_COMMENT``: a GIF comment extension, a PNG text chunk),
and publish their result only on a clean close: a GIF is encoded into memory and written to a
temporary file beside the target, then renamed; PNG frames go into a temporary folder beside
the target, which then takes the target's place. An interrupted or failed run leaves the
previous output as it was and nothing partial behind.
"""
from __future__ import annotations

import io
import logging
import math
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Self

import av
import cv2
import numpy as np
from PIL import Image, PngImagePlugin

from .disclosure import stamp_disclosure
from .video_io import DISCLOSURE_COMMENT, check_rgb_frame

logger = logging.getLogger(__name__)

GIF_STILL_LEVELS = 3  # a pixel that moved by at most this much (0..255, any channel) keeps its colour index
_GIF_PALETTE_SAMPLE_PX = 1_000_000  # pixels the clip's palette is computed from, at most
_GIF_CENTISECOND = Fraction(1, 100)  # GIF frame delays are whole hundredths of a second
PNG_FRAME_NAME = "frame_{:06d}.png"  # in a PNG frames folder, numbered from 0
PNG_COMPRESS_LEVEL = 1  # zlib level: a 512x512 demo frame takes 1/4 of the time of level 6 for 10% more bytes


def _check_rate_and_size(fps: float | Fraction, size: tuple[int, int]) -> Fraction:
    """The frame rate as a Fraction; ValueError for a rate that is not positive or a side under 2 px."""
    if not (isinstance(fps, Fraction) or math.isfinite(fps)) or fps <= 0:
        raise ValueError(f"expected a positive frame rate; got {fps}")
    if size[0] < 2 or size[1] < 2:
        raise ValueError(f"expected a frame size of at least 2x2 px; got {size[0]}x{size[1]}")
    return fps if isinstance(fps, Fraction) else Fraction(fps).limit_denominator(1001)


def gif_comment_extension(text: str) -> bytes:
    """The bytes of a GIF89a comment extension block holding ``text`` (ASCII)."""
    data = text.encode("ascii")
    blocks = b"".join(bytes([len(data[i:i + 255])]) + data[i:i + 255] for i in range(0, len(data), 255))
    return b"\x21\xfe" + blocks + b"\x00"


def insert_gif_comment(gif: bytes, text: str) -> bytes:
    """``gif`` with a comment extension after its header and global colour table."""
    if gif[:6] not in (b"GIF87a", b"GIF89a") or len(gif) < 13:
        raise ValueError("expected the bytes of a GIF file")
    flags = gif[10]
    end = 13 + (3 * 2 ** ((flags & 0x07) + 1) if flags & 0x80 else 0)
    return b"GIF89a" + gif[6:end] + gif_comment_extension(text) + gif[end:]


class GifWriter:
    """Encodes RGB frames to an animated GIF made for sharing.

    One 256-colour palette is computed for the whole clip (median cut over a sample of every
    kept frame) and each frame is mapped to it with Floyd-Steinberg dithering; pixels that did
    not move keep their previous colour index, so the background does not shimmer and frames
    compress to what changed. Every k-th frame is kept so that the rate is at most ``max_fps``;
    frames are scaled to at most ``max_side_px``; each carries the "AI-generated" label in its
    bottom-right corner (when it is at least 32 px each way) and the file carries
    DISCLOSURE_COMMENT in a comment extension. It loops forever and has no audio.

    Kept frames wait, as raw RGB, in an unnamed temporary file in the target's folder until
    close() has them all (the palette needs the whole clip): memory holds one frame, a 1/64
    sample of each for the palette, and the encoded GIF.

    Args: path: the output .gif; fps: the rate of the frames given to write();
        size: (width, height) of those frames, pixels; max_fps: the GIF's rate at most, frames
        per second (30 -> 15 at 15); max_side_px: its longer side at most, pixels.
    Raises: ValueError for a bad fps, size or cap; ShapeError from write() for a wrong frame.
    """

    has_audio = False

    def __init__(self, path: str | os.PathLike[str], fps: float | Fraction, size: tuple[int, int], *,
                 max_fps: float, max_side_px: int) -> None:
        rate_in = _check_rate_and_size(fps, size)
        if not max_fps > 0 or max_side_px < 2:
            raise ValueError(f"expected a positive max_fps and max_side_px >= 2; got {max_fps}, {max_side_px}")
        self.path = Path(path)
        self.size = (int(size[0]), int(size[1]))
        self.step = max(1, math.ceil(rate_in / Fraction(max_fps)))  # keep frames 0, step, 2 step, ...
        self.rate = rate_in / self.step  # of the GIF
        scale = min(1.0, max_side_px / max(self.size))
        self.encoded_size = (max(2, round(self.size[0] * scale)), max(2, round(self.size[1] * scale)))
        self.frames_written = 0  # frames the GIF holds
        self._frames_given = 0
        self._samples: list[np.ndarray] = []  # (n, 3) uint8 pixels of each kept frame, for the palette
        # Unnamed (O_TMPFILE): it leaves nothing behind, even when the process is killed. Closed by close().
        self._spool = tempfile.TemporaryFile(dir=self.path.parent, suffix=".frames")  # noqa: SIM115
        self._partial = self.path.with_name(f".{self.path.name}.partial")
        self._closed = False

    def write(self, frame: np.ndarray) -> None:
        """Append one frame: (H, W, 3) uint8 RGB with (W, H) == size."""
        check_rgb_frame(frame, self.size)
        index, self._frames_given = self._frames_given, self._frames_given + 1
        if index % self.step:
            return
        if self.encoded_size != self.size:
            frame = cv2.resize(frame, self.encoded_size, interpolation=cv2.INTER_AREA)
        else:
            frame = frame.copy()
        if min(frame.shape[:2]) >= 32:
            stamp_disclosure(frame)
        self._spool.write(np.ascontiguousarray(frame).tobytes())
        self._samples.append(frame[::8, ::8].reshape(-1, 3))
        self.frames_written += 1

    def _palette(self) -> Image.Image:
        """A "P" image whose 256-entry palette suits the whole clip (median cut over the samples)."""
        pixels = np.concatenate(self._samples)
        if len(pixels) > _GIF_PALETTE_SAMPLE_PX:
            pixels = pixels[np.linspace(0, len(pixels) - 1, _GIF_PALETTE_SAMPLE_PX).astype(np.int64)]
        width = 1024
        rows = -(-len(pixels) // width)
        padded = np.concatenate([pixels, np.repeat(pixels[-1:], rows * width - len(pixels), axis=0)])
        palette = Image.fromarray(padded.reshape(rows, width, 3)).quantize(
            256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        colours = palette.getpalette() or []
        palette.putpalette(colours + [0] * (768 - len(colours)))
        return palette

    def _indexed_frames(self, palette: Image.Image) -> Iterator[np.ndarray]:
        """The kept frames as (H, W) uint8 indices into ``palette``, read back from the spool.

        Dithered; a pixel within GIF_STILL_LEVELS of the colour its previous index was chosen
        for keeps that index, so still areas do not shimmer and do not need to be re-encoded.
        """
        width, height = self.encoded_size
        previous: np.ndarray | None = None  # (H, W) uint8 indices of the last frame
        held: np.ndarray | None = None  # (H, W, 3) int16: the colours those indices were chosen for
        self._spool.seek(0)
        for _ in range(self.frames_written):
            rgb = np.frombuffer(self._spool.read(width * height * 3), np.uint8).reshape(height, width, 3)
            indices = np.asarray(Image.fromarray(rgb).quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG))
            current = rgb.astype(np.int16)
            if previous is None or held is None:
                held = current
            else:
                still = np.abs(current - held).max(axis=2) <= GIF_STILL_LEVELS
                indices = np.where(still, previous, indices)
                held = np.where(still[..., None], held, current)
            previous = indices
            yield np.ascontiguousarray(indices)

    def _encode(self) -> bytes:
        """The GIF's bytes (FFmpeg's encoder crops each frame to what changed; the rest is transparent)."""
        palette = self._palette()
        colours = np.asarray(palette.getpalette()[:768], np.uint8).reshape(256, 3)
        argb = np.concatenate([np.full((256, 1), 255, np.uint8), colours], axis=1)  # what PyAV's pal8 takes
        buffer = io.BytesIO()
        with av.open(buffer, mode="w", format="gif") as container:
            stream = container.add_stream("gif", rate=self.rate)
            stream.width, stream.height = self.encoded_size
            stream.pix_fmt = "pal8"
            stream.codec_context.time_base = _GIF_CENTISECOND
            for index, indices in enumerate(self._indexed_frames(palette)):
                frame = av.VideoFrame.from_ndarray((indices, argb), format="pal8")
                frame.pts = round(index / self.rate / _GIF_CENTISECOND)  # whole centiseconds, no drift
                frame.time_base = _GIF_CENTISECOND
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        return insert_gif_comment(buffer.getvalue(), DISCLOSURE_COMMENT)

    def close(self, *, keep: bool = True) -> None:
        """Encode and publish the GIF; keep=False (or no frame written) discards it."""
        if self._closed:
            return
        self._closed = True
        try:
            if keep and self.frames_written == 0:
                logger.warning("no frames were written; %s is not made", self.path)
                keep = False
            if keep:
                self._partial.write_bytes(self._encode())
                os.replace(self._partial, self.path)
        except BaseException:
            self._partial.unlink(missing_ok=True)
            raise
        finally:
            self._spool.close()
            self._samples.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close(keep=error is None)


def png_disclosure_info() -> PngImagePlugin.PngInfo:
    """PNG text chunks that mark a file as made by enliven: ``Comment`` = DISCLOSURE_COMMENT."""
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", DISCLOSURE_COMMENT)
    return info


def encode_disclosed_png(image: np.ndarray, compress_level: int = 6) -> bytes:
    """PNG bytes of an (H, W, 3) uint8 RGB image with the disclosure text chunk and no other metadata."""
    buffer = io.BytesIO()
    Image.fromarray(image, "RGB").save(buffer, format="PNG", pnginfo=png_disclosure_info(),
                                       compress_level=compress_level)
    return buffer.getvalue()


def _new_folder(beside: Path, suffix: str) -> Path:
    """A new empty folder named after ``beside``, in its parent, with the umask's permissions (not 0700)."""
    for _ in range(100):
        folder = beside.with_name(f".{beside.name}.{secrets.token_hex(4)}{suffix}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {beside}")


class PngFramesWriter:
    """Writes RGB frames as numbered PNG files (PNG_FRAME_NAME) into a folder.

    Frames go into a temporary folder beside ``path``; a clean close moves the folder that was at
    ``path`` aside, renames the new one into its place, and deletes the old one. The caller makes
    sure an existing ``path`` holds nothing but frames of an earlier run (output_formats does).
    The frame rate is not stored in the files (PNG has no place for it).

    Args: path: the folder; fps: the rate of the frames, for ``rate``; size: (width, height).
    Raises: ValueError for a bad fps or size; ShapeError from write() for a wrong frame.
    """

    has_audio = False

    def __init__(self, path: str | os.PathLike[str], fps: float | Fraction, size: tuple[int, int]) -> None:
        self.rate = _check_rate_and_size(fps, size)
        self.path = Path(path)
        self.size = self.encoded_size = (int(size[0]), int(size[1]))
        self.frames_written = 0
        self._partial = _new_folder(self.path, ".partial")
        self._info = png_disclosure_info()
        self._closed = False

    def write(self, frame: np.ndarray) -> None:
        """Add one frame: (H, W, 3) uint8 RGB with (W, H) == size."""
        check_rgb_frame(frame, self.size)
        name = self._partial / PNG_FRAME_NAME.format(self.frames_written)
        Image.fromarray(frame, "RGB").save(name, format="PNG", pnginfo=self._info, compress_level=PNG_COMPRESS_LEVEL)
        self.frames_written += 1

    def _publish(self) -> None:
        """Put the finished folder at ``path``; the one there before is removed only once it has."""
        if not self.path.exists():
            os.rename(self._partial, self.path)
            return
        old = _new_folder(self.path, ".old")
        os.rename(self.path, old / "frames")
        try:
            os.rename(self._partial, self.path)
        except BaseException:
            os.rename(old / "frames", self.path)
            shutil.rmtree(old, ignore_errors=True)
            raise
        shutil.rmtree(old, ignore_errors=True)

    def close(self, *, keep: bool = True) -> None:
        """Publish the frames; keep=False (or no frame written) discards them."""
        if self._closed:
            return
        self._closed = True
        try:
            if keep and self.frames_written == 0:
                logger.warning("no frames were written; %s is not made", self.path)
                keep = False
            if keep:
                self._publish()
        finally:
            shutil.rmtree(self._partial, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close(keep=error is None)
