"""Safe photo ingest: bytes or a file -> (H, W, 3) uint8 RGB, and metadata-free re-encoding.

Policy (RELIABILITY.md, "Upload / image ingest"): JPEG, PNG and WebP only; a byte limit checked
before the whole input is read; a pixel limit checked from the header before any pixel is
decoded; EXIF orientation applied; truncated data rejected (``LOAD_TRUNCATED_IMAGES`` is left
False). Only the first frame of an animated image is used. Pillow's global state is not changed.
"""

from __future__ import annotations

import io
import logging
import os
import stat
import struct
import warnings
import zlib

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from enliven.engine.errors import BadImageError, ImageTooLargeError, ShapeError, UnsupportedFormatError

logger = logging.getLogger(__name__)

MIN_SIDE_PX = 32  # smaller photos cannot hold a usable face
_OPEN_FORMATS = ("JPEG", "PNG", "WEBP")  # Pillow plugins allowed to parse the input
_ACCEPTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP"})  # MPO: a multi-picture JPEG
_EXPECTED = "expected a JPEG, PNG or WebP image"
# What Pillow may raise on malformed input (its fuzz harness sees these kinds).
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError, struct.error, zlib.error)

# Magic numbers of formats we refuse, only to name them in the error message.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"8BPS", "PSD"),
    (b"SIMPLE  =", "FITS"),
    (b"%PDF", "PDF"),
    (b"%!PS", "EPS"),
    (b"\xc5\xd0\xd3\xc6", "EPS"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"\x76\x2f\x31\x01", "OpenEXR"),
    (b"#?RADIANCE", "HDR"),
    (b"PK\x03\x04", "ZIP"),
    (b"\x1f\x8b", "gzip"),
)
_OWN_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
)


def load_photo(
    source: str | os.PathLike[str] | bytes,
    *,
    max_pixels: int = 25_000_000,
    max_bytes: int = 20 * 2**20,
) -> np.ndarray:
    """Decode a JPEG, PNG or WebP photo, upright, as RGB.

    Args: source: a path, or the encoded bytes; max_pixels: width * height limit, checked from
        the header before decoding; max_bytes: size limit of the encoded input.
    Returns: (H, W, 3) uint8 RGB, EXIF orientation applied, alpha composited on white,
        16-bit samples reduced to 8 bits, first frame of an animation.
    Raises: ImageTooLargeError (bytes or pixels over the limits), UnsupportedFormatError (a
        format outside the allowlist), BadImageError (missing, empty, truncated, corrupt,
        or smaller than 32x32 px).
    """
    data = _read_bounded(source, max_bytes)
    if not data:
        raise BadImageError(f"{_EXPECTED}; got an empty file")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=list(_OPEN_FORMATS))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise _bomb_error(max_pixels, e) from e
        except UnidentifiedImageError as e:
            raise _identify_refused(data) from e
        except _DECODE_ERRORS as e:
            raise BadImageError(f"{_EXPECTED}; got an unreadable file ({e})") from e
        with image:
            return _decode(image, max_pixels)


def _bomb_error(max_pixels: int, e: Exception) -> ImageTooLargeError:
    """Pillow's own decompression-bomb check fired (its limit is above ours unless raised)."""
    return ImageTooLargeError(f"expected at most {max_pixels} pixels; got more than Pillow allows ({e})")


def _read_bounded(source: str | os.PathLike[str] | bytes, max_bytes: int) -> bytes:
    """The encoded bytes, refusing more than max_bytes before reading them all."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        size = memoryview(source).nbytes
        if size > max_bytes:
            raise ImageTooLargeError(f"expected at most {max_bytes} bytes; got {size}")
        return bytes(source)
    path = os.fspath(source)
    try:
        info = os.stat(path)  # before open(): opening a FIFO would block
        if stat.S_ISDIR(info.st_mode):
            raise BadImageError(f"expected an image file; {path!r} is a directory")
        if not stat.S_ISREG(info.st_mode):
            raise BadImageError(f"expected an image file; {path!r} is not a regular file")
        if info.st_size > max_bytes:
            raise ImageTooLargeError(f"expected at most {max_bytes} bytes; {path!r} has {info.st_size}")
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)  # the file may have grown since the stat
    except FileNotFoundError as e:
        raise BadImageError(f"expected an image file; {path!r} does not exist") from e
    except OSError as e:
        raise BadImageError(f"expected a readable image file; cannot read {path!r} ({e.strerror or e})") from e
    if len(data) > max_bytes:
        raise ImageTooLargeError(f"expected at most {max_bytes} bytes; {path!r} has more")
    return data


def _identify_refused(data: bytes) -> BadImageError | UnsupportedFormatError:
    """The error for input that no allowed plugin would open: name what it seems to be."""
    head = data[:64]
    for magic, name in _SIGNATURES:
        if head.startswith(magic):
            return UnsupportedFormatError(f"{_EXPECTED}; got {name}")
    if head[4:8] == b"ftyp":
        brand = head[8:12].decode("ascii", "replace").strip()
        return UnsupportedFormatError(f"{_EXPECTED}; got an ISO media file (brand {brand!r}, e.g. HEIC/AVIF)")
    if head.startswith(b"RIFF") and head[8:12] != b"WEBP":
        return UnsupportedFormatError(f"{_EXPECTED}; got a RIFF {head[8:12]!r} file")
    for magic, name in _OWN_SIGNATURES:
        if head.startswith(magic):
            return BadImageError(f"{_EXPECTED}; got a {name} with a corrupt header")
    if head.startswith(b"RIFF"):
        return BadImageError(f"{_EXPECTED}; got a WebP with a corrupt header")
    text = _as_text(data[:1024])
    if text is not None:
        kind = "SVG/XML" if "<svg" in text.lower() or text.lstrip().startswith("<?xml") else "text"
        return UnsupportedFormatError(f"{_EXPECTED}; got {kind}")
    return BadImageError(f"{_EXPECTED}; got data in no known image format")


def _as_text(head: bytes) -> str | None:
    """The head decoded as UTF-8 if it looks like text (printable or whitespace), else None."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 3:  # not just a character cut at the end
            return None
        text = head[: e.start].decode("utf-8")
    return text if text and all(c.isprintable() or c in "\t\r\n\f" for c in text) else None


def _decode(image: Image.Image, max_pixels: int) -> np.ndarray:
    """Size checks from the header, then decode frame 0, orient and convert to RGB."""
    if image.format not in _ACCEPTED_FORMATS:  # cannot happen with formats=...; kept as a guard
        raise UnsupportedFormatError(f"{_EXPECTED}; got {image.format}")
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLargeError(f"expected at most {max_pixels} pixels; got {width}x{height} = {width * height}")
    if width < MIN_SIDE_PX or height < MIN_SIDE_PX:
        raise BadImageError(
            f"expected an image of at least {MIN_SIDE_PX}x{MIN_SIDE_PX} px; got {width}x{height} (too small)"
        )
    try:
        image.load()  # frame 0; raises on truncated or corrupt data
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise _bomb_error(max_pixels, e) from e
    except _DECODE_ERRORS as e:
        raise BadImageError(f"{_EXPECTED}; got a {image.format} that cannot be decoded ({e})") from e
    try:
        upright = ImageOps.exif_transpose(image)
    except _DECODE_ERRORS as e:  # a broken EXIF block: keep the pixels as stored
        logger.warning("ignoring unreadable EXIF orientation: %s", e)
        upright = image
    return _to_rgb(upright)


def _to_rgb(image: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB from any Pillow mode; alpha composited on white, 16 bits -> 8."""
    if image.mode.startswith("I"):  # 16-bit grayscale PNG ("I;16", "I"): Pillow's convert clips
        gray = np.asarray(image).astype(np.int64)
        gray = np.clip(gray, 0, 65535) >> 8
        return np.repeat(gray.astype(np.uint8)[:, :, None], 3, axis=2)
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if not has_alpha:
        return np.array(image.convert("RGB"), dtype=np.uint8)
    rgba = np.asarray(image.convert("RGBA"), dtype=np.uint16)
    alpha = rgba[:, :, 3:4]
    rgb = (rgba[:, :, :3] * alpha + 255 * (255 - alpha) + 127) // 255
    return rgb.astype(np.uint8)


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of an (H, W, 3) uint8 RGB image, with no metadata (no EXIF, ICC or text)."""
    buffer = io.BytesIO()
    _to_pil(image).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    """Baseline JPEG bytes of an (H, W, 3) uint8 RGB image, with no metadata (no EXIF or ICC)."""
    if not 1 <= quality <= 95:
        raise ValueError(f"expected a JPEG quality in 1..95; got {quality}")
    buffer = io.BytesIO()
    _to_pil(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _to_pil(image: np.ndarray) -> Image.Image:
    """A fresh Pillow image (empty info, so nothing but pixels is written) from (H, W, 3) uint8."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        got = f"{image.shape} {image.dtype}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ShapeError(f"expected an (H, W, 3) uint8 RGB array; got {got}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ShapeError(f"expected a non-empty image; got {image.shape}")
    return Image.fromarray(np.ascontiguousarray(image))
