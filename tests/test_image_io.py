"""Tests of enliven.engine.image_io: the allowlist, limits, corrupt input, orientation, re-encoding."""

from __future__ import annotations

import io
import os
import struct
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from enliven.engine.errors import BadImageError, EnlivenError, ImageTooLargeError, ShapeError, UnsupportedFormatError
from enliven.engine.image_io import encode_jpeg, encode_png, load_photo

pytestmark = pytest.mark.timeout(10)


# ---------------------------------------------------------------- fixtures made here


def _upright(height: int = 64, width: int = 96) -> np.ndarray:
    """(H, W, 3) uint8: four flat quadrants of distinct colours, no symmetry."""
    image = np.zeros((height, width, 3), np.uint8)
    h, w = height // 2, width // 2
    image[:h, :w] = (220, 30, 30)
    image[:h, w:] = (30, 200, 40)
    image[h:, :w] = (40, 40, 210)
    image[h:, w:] = (230, 220, 40)
    return image


def _encode(image: np.ndarray | Image.Image, fmt: str, **params: object) -> bytes:
    pil = Image.fromarray(image) if isinstance(image, np.ndarray) else image
    buffer = io.BytesIO()
    pil.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def _noise(height: int = 256, width: int = 256, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_header(width: int, height: int, color_type: int = 0) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)


@pytest.fixture(scope="module")
def png_bomb() -> bytes:
    """A real 14000x14000 8-bit grayscale PNG of zeros (~190 KB), built without a 196 MB image."""
    compressor = zlib.compressobj(9)
    rows = bytes(14000 + 1) * 1000  # filter byte + 14000 samples, 1000 rows at a time
    idat = b"".join(compressor.compress(rows) for _ in range(14)) + compressor.flush()
    return _png_header(14000, 14000) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _with_jpeg_size(jpeg: bytes, width: int, height: int) -> bytes:
    """The JPEG with its SOF0 frame header claiming another size (the data stay small)."""
    at = jpeg.index(b"\xff\xc0")
    return jpeg[: at + 5] + struct.pack(">HH", height, width) + jpeg[at + 9 :]


# ---------------------------------------------------------------- accepted input


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_allowed_formats_give_rgb_uint8(fmt: str) -> None:
    upright = _upright()
    out = load_photo(_encode(upright, fmt, quality=95) if fmt != "PNG" else _encode(upright, fmt))
    assert out.shape == (64, 96, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    assert np.abs(out.astype(int) - upright).mean() < 3


def test_path_and_bytes_give_the_same_pixels(tmp_path: Path) -> None:
    data = _encode(_upright(), "PNG")
    (tmp_path / "a.png").write_bytes(data)
    np.testing.assert_array_equal(load_photo(tmp_path / "a.png"), load_photo(data))
    np.testing.assert_array_equal(load_photo(str(tmp_path / "a.png")), _upright())


# Stored pixels for each EXIF orientation, from the tag's definition (where row 0 / column 0 of the
# stored image lie in the upright picture), written independently of Pillow's exif_transpose.
_STORED_FOR_TAG = {
    1: lambda u: u,
    2: lambda u: u[:, ::-1],
    3: lambda u: u[::-1, ::-1],
    4: lambda u: u[::-1, :],
    5: lambda u: u.transpose(1, 0, 2),
    6: lambda u: np.rot90(u, 1),
    7: lambda u: np.rot90(u, 1)[:, ::-1],
    8: lambda u: np.rot90(u, -1),
}


@pytest.mark.parametrize("tag", range(1, 9))
def test_exif_orientation_gives_the_upright_image(tag: int) -> None:
    upright = _upright()
    stored = np.ascontiguousarray(_STORED_FOR_TAG[tag](upright))
    exif = Image.Exif()
    exif[274] = tag
    out = load_photo(_encode(stored, "JPEG", quality=95, exif=exif.tobytes()))
    assert out.shape == upright.shape
    assert np.abs(out.astype(int) - upright).mean() < 4  # JPEG tolerance; a wrong turn is ~100


def test_rgba_is_composited_on_white() -> None:
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., :3] = (200, 0, 0)
    rgba[:, :20, 3] = 255  # opaque red
    rgba[:, 20:30, 3] = 0  # transparent -> white
    rgba[:, 30:, 3] = 128  # half
    out = load_photo(_encode(rgba, "PNG"))
    assert out.shape == (40, 40, 3)
    np.testing.assert_array_equal(out[0, 0], (200, 0, 0))
    np.testing.assert_array_equal(out[0, 25], (255, 255, 255))
    np.testing.assert_allclose(out[0, 35], (228, 127, 127), atol=1)


def test_palette_with_transparency_and_gray_alpha() -> None:
    palette = Image.new("P", (40, 40), 0)
    palette.putpalette([0, 0, 255] + [0, 255, 0] * 255)
    palette.paste(1, (0, 0, 20, 40))
    out = load_photo(_encode(palette, "PNG", transparency=0))
    np.testing.assert_array_equal(out[0, 0], (0, 255, 0))
    np.testing.assert_array_equal(out[0, 30], (255, 255, 255))
    gray_alpha = Image.merge("LA", (Image.new("L", (40, 40), 10), Image.new("L", (40, 40), 0)))
    np.testing.assert_array_equal(load_photo(_encode(gray_alpha, "PNG"))[5, 5], (255, 255, 255))


def test_grayscale_and_16_bit_become_rgb() -> None:
    gray = np.tile(np.arange(64, dtype=np.uint8)[None, :] * 4, (40, 1))
    out = load_photo(_encode(gray, "PNG"))
    assert out.shape == (40, 64, 3)
    np.testing.assert_array_equal(out[..., 0], gray)
    np.testing.assert_array_equal(out[..., 2], gray)
    deep = gray.astype(np.uint16) * 257  # 16-bit PNG: Pillow's own convert("RGB") would clip to 255
    assert Image.open(io.BytesIO(_encode(deep, "PNG"))).mode.startswith("I")
    np.testing.assert_array_equal(load_photo(_encode(deep, "PNG"))[..., 1], gray)


def test_cmyk_jpeg_becomes_rgb() -> None:
    cmyk = Image.fromarray(_upright()).convert("CMYK")
    out = load_photo(_encode(cmyk, "JPEG", quality=95))
    assert out.shape == (64, 96, 3) and out.dtype == np.uint8


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_animation_gives_its_first_frame(fmt: str) -> None:
    frames = [Image.new("RGB", (48, 48), colour) for colour in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    data = _encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, lossless=True)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3
    out = load_photo(data)
    assert out.shape == (48, 48, 3)
    np.testing.assert_allclose(out[24, 24], (255, 0, 0), atol=2)


def test_polyglot_tail_is_dropped_by_reencoding() -> None:
    data = _encode(_upright(), "PNG") + b"PK\x03\x04" + b"<script>alert(1)</script>" * 10
    stored = encode_png(load_photo(data))
    assert stored != data and b"PK\x03\x04" not in stored and b"script" not in stored


# ---------------------------------------------------------------- limits


def test_png_bomb_is_rejected_from_the_header_without_decoding(
    png_bomb: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert len(png_bomb) < 700_000

    def no_decoding(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    start = time.perf_counter()
    with pytest.raises(ImageTooLargeError) as info:
        load_photo(png_bomb)
    assert time.perf_counter() - start < 0.5
    assert info.value.code == "image_too_large" and "25000000 pixels" in str(info.value)


def test_pixel_limit_is_ours_below_pillow_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("pixels were decoded"))
    with pytest.raises(ImageTooLargeError, match="6000x5000"):  # 30 MP: above 25 MP, below Pillow's 89 MP
        load_photo(_png_header(6000, 5000) + _png_chunk(b"IDAT", b"x") + _png_chunk(b"IEND", b""))
    with pytest.raises(ImageTooLargeError, match="100x100"):
        load_photo(_encode(_noise(100, 100), "PNG"), max_pixels=5000)


def test_jpeg_bomb_header_is_rejected() -> None:
    with pytest.raises(ImageTooLargeError):
        load_photo(_with_jpeg_size(_encode(_noise(64, 64), "JPEG"), 30000, 30000))


def test_webp_canvas_bomb_is_rejected() -> None:
    frames = [Image.new("RGB", (48, 48), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    data = _encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100, lossless=True)
    at = data.index(b"VP8X") + 12  # canvas width - 1, height - 1: 24-bit little-endian each
    for side in (16000, 5001):  # above Pillow's limit; above ours only
        bomb = data[:at] + (side - 1).to_bytes(3, "little") * 2 + data[at + 6 :]
        with pytest.raises(ImageTooLargeError):
            load_photo(bomb)


def test_png_with_huge_text_chunk_is_rejected() -> None:
    png = _encode(_upright(), "PNG")
    text = _png_chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(bytes(4 * 2**20)))  # inflates to 4 MiB
    for data in (png[:33] + text + png[33:], png[:-12] + text + png[-12:]):  # before / after the pixels
        with pytest.raises(BadImageError, match="too large"):
            load_photo(data)


def test_pillow_bomb_warning_becomes_our_error_and_does_not_leak() -> None:
    filters_before = list(warnings.filters)
    limit_before = Image.MAX_IMAGE_PIXELS
    header = (
        _png_header(10000, 10000) + _png_chunk(b"IDAT", b"x") + _png_chunk(b"IEND", b"")
    )  # 100 MP: a warning in Pillow
    with pytest.raises(ImageTooLargeError):
        load_photo(header, max_pixels=150_000_000)
    assert warnings.filters == filters_before and limit_before == Image.MAX_IMAGE_PIXELS
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_byte_limit_for_bytes_and_for_a_path_before_reading(tmp_path: Path) -> None:
    with pytest.raises(ImageTooLargeError, match="at most 1000 bytes"):
        load_photo(bytes(1001), max_bytes=1000)
    huge = tmp_path / "huge.jpg"
    with open(huge, "wb") as f:
        f.truncate(2**30)  # a sparse 1 GiB file: reading it first would take seconds and 1 GiB
    start = time.perf_counter()
    with pytest.raises(ImageTooLargeError, match="1073741824"):
        load_photo(huge)
    assert time.perf_counter() - start < 0.5


def test_too_small_is_rejected() -> None:
    with pytest.raises(BadImageError, match="too small"):
        load_photo(_encode(_noise(31, 200), "PNG"))
    assert load_photo(_encode(_noise(32, 32), "PNG")).shape == (32, 32, 3)


# ---------------------------------------------------------------- refused formats


@pytest.mark.parametrize(
    ("fmt", "name"),
    [("TIFF", "TIFF"), ("GIF", "GIF"), ("BMP", "BMP"), ("ICO", "ICO"), ("PDF", "PDF")],
)
def test_formats_outside_the_allowlist(fmt: str, name: str) -> None:
    with pytest.raises(UnsupportedFormatError, match=f"expected a JPEG, PNG or WebP image; got {name}") as info:
        load_photo(_encode(_upright(), fmt))
    assert info.value.code == "unsupported_format"


def test_bmp_renamed_jpg_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(_encode(_upright(), "BMP"))
    with pytest.raises(UnsupportedFormatError, match="got BMP"):
        load_photo(path)


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (b"hello, this is not a picture\n", "text"),
        (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"/>', "SVG"),
        (b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', "SVG"),
        (b"8BPS\x00\x01" + bytes(100), "PSD"),
        (b"SIMPLE  =                    T" + bytes(2850), "FITS"),
        (b"\x00\x00\x00\x18ftypheic" + bytes(100), "HEIC"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n", "EPS"),
    ],
)
def test_other_refused_kinds_are_named(data: bytes, name: str) -> None:
    with pytest.raises(UnsupportedFormatError, match=name):
        load_photo(data)


def test_only_allowlisted_plugins_are_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[object] = []
    real_open = Image.open

    def spy(fp: object, mode: str = "r", formats: object = None) -> Image.Image:
        seen.append(formats)
        return real_open(fp, mode, formats)  # type: ignore[arg-type]

    monkeypatch.setattr(Image, "open", spy)
    with pytest.raises(UnsupportedFormatError):
        load_photo(_encode(_upright(), "TIFF"))
    load_photo(_encode(_upright(), "PNG"))
    assert seen == [["JPEG", "PNG", "WEBP"]] * 2


# ---------------------------------------------------------------- corrupt input


def test_truncated_jpeg() -> None:
    data = _encode(_noise(), "JPEG", quality=90)
    with pytest.raises(BadImageError, match="JPEG") as info:
        load_photo(data[: len(data) // 2])
    assert info.value.code == "bad_image"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_truncated_png_and_webp() -> None:
    for fmt in ("PNG", "WEBP"):
        data = _encode(_noise(), fmt)
        with pytest.raises(BadImageError):
            load_photo(data[: len(data) // 2])


def test_random_bytes() -> None:
    with pytest.raises(BadImageError, match="no known image format"):
        load_photo(np.random.default_rng(1).bytes(5000))


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xd8\xff\xe0" + np.random.default_rng(2).bytes(3000),  # JPEG marker, then garbage
        _png_header(64, 64) + np.random.default_rng(3).bytes(3000),  # a valid IHDR, then garbage
        _png_header(64, 64) + _png_chunk(b"IDAT", np.random.default_rng(4).bytes(3000)) + _png_chunk(b"IEND", b""),
        b"\x89PNG\r\n\x1a\n" + bytes(20),
        b"RIFF\x00\x10\x00\x00WEBPVP8 " + np.random.default_rng(5).bytes(3000),
    ],
    ids=["jpeg-garbage", "png-garbage", "png-bad-idat", "png-bad-ihdr", "webp-garbage"],
)
def test_valid_header_with_garbage(data: bytes) -> None:
    with pytest.raises(BadImageError):
        load_photo(data)


def test_empty_missing_and_directory(tmp_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(BadImageError, match="empty"):
        load_photo(tmp_path / "empty.png")
    with pytest.raises(BadImageError, match="empty"):
        load_photo(b"")
    with pytest.raises(BadImageError, match="does not exist"):
        load_photo(tmp_path / "missing.jpg")
    with pytest.raises(BadImageError, match="is a directory"):
        load_photo(tmp_path)
    os.mkfifo(tmp_path / "pipe.png")  # opening it for reading would block
    with pytest.raises(BadImageError, match="not a regular file"):
        load_photo(tmp_path / "pipe.png")


def test_corrupt_after_valid_never_returns_old_pixels() -> None:
    good = _encode(_noise(seed=7), "JPEG")
    assert load_photo(good).shape == (256, 256, 3)
    with pytest.raises(BadImageError):
        load_photo(_encode(_noise(seed=8), "JPEG")[:3000])


def test_every_error_is_an_enliven_error() -> None:
    for error in (BadImageError, UnsupportedFormatError, ImageTooLargeError):
        assert issubclass(error, EnlivenError)


# ---------------------------------------------------------------- re-encoding


def _photo_with_metadata() -> bytes:
    exif = Image.Exif()
    exif[274] = 1
    exif[0x010F] = "PhoneMaker"  # Make
    exif[0x8825] = {1: "N", 2: (52.0, 31.0, 12.0)}  # GPS IFD: latitude
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return _encode(_upright(), "JPEG", quality=95, exif=exif.tobytes(), icc_profile=icc, comment=b"secret")


def test_reencoded_png_has_no_metadata() -> None:
    data = _photo_with_metadata()
    assert Image.open(io.BytesIO(data)).getexif()  # the input does carry EXIF
    pixels = load_photo(data)
    out = encode_png(pixels)
    assert out != data and out.startswith(b"\x89PNG")
    reread = Image.open(io.BytesIO(out))
    assert not reread.getexif() and set(reread.info) <= {"dpi"}
    for chunk in (b"eXIf", b"iCCP", b"tEXt", b"zTXt", b"iTXt"):
        assert chunk not in out
    np.testing.assert_array_equal(load_photo(out), pixels)


def test_reencoded_jpeg_has_no_metadata() -> None:
    data = _photo_with_metadata()
    out = encode_jpeg(load_photo(data), quality=85)
    assert out != data and out.startswith(b"\xff\xd8")
    assert b"Exif" not in out and b"ICC_PROFILE" not in out and b"PhoneMaker" not in out and b"secret" not in out
    reread = Image.open(io.BytesIO(out))
    assert not reread.getexif() and "icc_profile" not in reread.info
    assert np.abs(load_photo(out).astype(int) - _upright()).mean() < 4


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((8, 8), np.uint8),
        np.zeros((8, 8, 4), np.uint8),
        np.zeros((8, 8, 3), np.float32),
        np.zeros((0, 8, 3), np.uint8),
    ],
)
def test_encoders_reject_wrong_arrays(bad: np.ndarray) -> None:
    with pytest.raises(ShapeError):
        encode_png(bad)
    with pytest.raises(ShapeError):
        encode_jpeg(bad)


def test_encode_jpeg_quality_range() -> None:
    with pytest.raises(ValueError):
        encode_jpeg(_upright(), quality=0)
