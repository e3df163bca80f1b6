"""Tests of enliven.engine.image_writers: GIFs and PNG frame folders made here, read back with PyAV and Pillow."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from enliven.engine.disclosure import stamp_disclosure
from enliven.engine.errors import ShapeError
from enliven.engine.image_writers import (
    GifWriter,
    PngFramesWriter,
    encode_disclosed_png,
    gif_comment_extension,
    insert_gif_comment,
)
from enliven.engine.video_io import DISCLOSURE_COMMENT

pytestmark = pytest.mark.timeout(30)

NTSC = Fraction(30000, 1001)


def _moving(count: int, height: int = 96, width: int = 128) -> list[np.ndarray]:
    """Frames of a still gradient background with a square that moves right by 2 px a frame."""
    y, x = np.mgrid[0:height, 0:width]
    background = np.stack([x * 255 // width, y * 255 // height, np.full_like(x, 90)], axis=2).astype(np.uint8)
    frames = []
    for index in range(count):
        frame = background.copy()
        frame[20:44, 4 + 2 * index:28 + 2 * index] = (230, 40, 40)
        frames.append(frame)
    return frames


def _gif(path: Path, frames: list[np.ndarray], fps: float | Fraction, **caps: float) -> GifWriter:
    height, width = frames[0].shape[:2]
    with GifWriter(path, fps, (width, height), max_fps=caps.get("max_fps", 15.0),
                   max_side_px=int(caps.get("max_side_px", 480))) as writer:
        for frame in frames:
            writer.write(frame)
    return writer


def _decoded(path: Path) -> tuple[list[np.ndarray], list[int], dict[str, str]]:
    """RGB frames, their pts (centiseconds) and the container's tags, as PyAV reads a GIF."""
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
        return [f.to_ndarray(format="rgb24") for f in frames], [int(f.pts) for f in frames], dict(container.metadata)


# ---------------------------------------------------------------- GIF


@pytest.mark.parametrize(("fps", "kept_every", "gif_fps"), [
    (NTSC, 2, NTSC / 2),
    (25, 2, Fraction(25, 2)),
    (60, 4, Fraction(15)),
    (10, 1, Fraction(10)),
])
def test_gif_frame_rate_is_capped_by_keeping_every_kth_frame(tmp_path: Path, fps: float | Fraction, kept_every: int,
                                                              gif_fps: Fraction) -> None:
    frames = _moving(30)
    writer = _gif(tmp_path / "a.gif", frames, fps)
    assert writer.step == kept_every and writer.rate == gif_fps and writer.rate <= 15
    assert writer.frames_written == len(frames[::kept_every])
    decoded, pts, _ = _decoded(tmp_path / "a.gif")
    assert len(decoded) == writer.frames_written
    # Delays are whole centiseconds; their sum follows the exact rate without drift.
    assert pts == [round(i * 100 / gif_fps) for i in range(len(decoded))]
    for want, got in zip(frames[::kept_every], decoded, strict=True):  # the kept frames, in order
        assert np.abs(got[20:44, :100].astype(int) - want[20:44, :100]).mean() < 12


def test_gif_is_scaled_down_keeping_its_aspect(tmp_path: Path) -> None:
    frames = _moving(4, 300, 800)
    writer = _gif(tmp_path / "wide.gif", frames, 25, max_side_px=480)
    assert writer.encoded_size == (480, 180)
    decoded, _, _ = _decoded(tmp_path / "wide.gif")
    assert decoded[0].shape == (180, 480, 3)
    small = _gif(tmp_path / "small.gif", _moving(2), 25)
    assert small.encoded_size == (128, 96)  # smaller than the cap: as given


def test_gif_palette_fits_the_clip_and_still_pixels_do_not_shimmer(tmp_path: Path) -> None:
    frames = _moving(12)
    _gif(tmp_path / "a.gif", frames, 10)
    decoded, _, _ = _decoded(tmp_path / "a.gif")
    errors = [np.abs(d[:60, :100].astype(int) - f[:60, :100]).mean() for d, f in zip(decoded, frames, strict=True)]
    assert max(errors) < 4  # 256 colours for a gradient and a red square: close to the source
    still = (slice(60, 80), slice(0, 100))  # background below the square, the same in every frame
    for frame in decoded[1:]:
        np.testing.assert_array_equal(frame[still], decoded[0][still])


def test_gif_carries_the_disclosure_in_a_comment_and_in_its_corner(tmp_path: Path) -> None:
    frames = _moving(3)
    _gif(tmp_path / "a.gif", frames, 25)
    decoded, _, tags = _decoded(tmp_path / "a.gif")
    assert tags.get("comment") == DISCLOSURE_COMMENT
    with Image.open(tmp_path / "a.gif") as image:
        assert image.info["comment"] == DISCLOSURE_COMMENT.encode() and image.info["loop"] == 0
    labelled = frames[0].copy()
    stamp_disclosure(labelled)
    corner = (slice(80, 96), slice(64, 128))
    assert np.abs(decoded[0][corner].astype(int) - labelled[corner]).mean() < 12
    assert np.abs(decoded[0][corner].astype(int) - frames[0][corner]).mean() > 40  # the label is there


def test_gif_comment_block_is_spliced_after_the_colour_table() -> None:
    block = gif_comment_extension("x" * 300)  # two sub-blocks: 255 + 45
    assert block[:3] == b"\x21\xfe\xff" and block[258] == 45 and block.endswith(b"\x00")
    header = b"GIF87a" + bytes([2, 0, 2, 0, 0x80, 0, 0]) + bytes(6)  # 2x2, a 2-colour global table
    spliced = insert_gif_comment(header + b";", "hi")
    assert spliced == b"GIF89a" + header[6:] + b"\x21\xfe\x02hi\x00" + b";"
    with pytest.raises(ValueError, match="GIF"):
        insert_gif_comment(b"\x89PNG....", "hi")


def test_gif_error_or_no_frames_leaves_the_old_file_and_nothing_else(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "a.gif"
    out.write_bytes(b"the previous output")
    with pytest.raises(KeyError), GifWriter(out, 25, (128, 96), max_fps=15, max_side_px=480) as writer:
        writer.write(_moving(1)[0])
        raise KeyError("interrupted")
    with GifWriter(out, 25, (128, 96), max_fps=15, max_side_px=480):
        pass
    assert "no frames were written" in caplog.text
    assert out.read_bytes() == b"the previous output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gif"]


def test_gif_rejects_bad_arguments(tmp_path: Path) -> None:
    for fps, size, cap in ((0, (32, 32), 15.0), (25, (1, 32), 15.0), (25, (32, 32), 0.0)):
        with pytest.raises(ValueError):
            GifWriter(tmp_path / "a.gif", fps, size, max_fps=cap, max_side_px=480)
    with GifWriter(tmp_path / "a.gif", 25, (32, 24), max_fps=15, max_side_px=480) as writer:
        with pytest.raises(ShapeError, match=r"expected a \(24, 32, 3\) uint8"):
            writer.write(np.zeros((32, 24, 3), np.uint8))
        writer.write(np.zeros((24, 32, 3), np.uint8))


# ---------------------------------------------------------------- PNG frames


def _png_comment(path: Path) -> str | None:
    with Image.open(path) as image:
        return image.info.get("Comment")


def test_png_frames_are_numbered_marked_and_readable_by_pyav(tmp_path: Path) -> None:
    frames = _moving(5)
    out = tmp_path / "frames"
    with PngFramesWriter(out, NTSC, (128, 96)) as writer:
        for frame in frames:
            writer.write(frame)
    assert writer.rate == NTSC and writer.frames_written == 5 and not writer.has_audio
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"frame_{i:06d}.png" for i in range(5)]
    assert all(_png_comment(out / name) == DISCLOSURE_COMMENT for name in names)
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # a plain folder, not a private temporary one
    with av.open(str(out / "frame_%06d.png"), format="image2", options={"framerate": "30000/1001"}) as container:
        got = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(got) == 5
    np.testing.assert_array_equal(got[3], frames[3])  # lossless
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]


def test_png_frames_replace_an_earlier_run_only_when_complete(tmp_path: Path) -> None:
    out = tmp_path / "frames"
    out.mkdir()
    for index in range(8):
        (out / f"frame_{index:06d}.png").write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt), PngFramesWriter(out, 25, (128, 96)) as writer:
        writer.write(_moving(1)[0])
        raise KeyboardInterrupt
    assert sorted(p.read_bytes() for p in out.iterdir()) == [b"old"] * 8  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]  # no temporary folder left
    with PngFramesWriter(out, 25, (128, 96)) as writer:
        for frame in _moving(3):
            writer.write(frame)
    assert sorted(p.name for p in out.iterdir()) == [f"frame_{i:06d}.png" for i in range(3)]  # the 8 old ones gone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]


def test_disclosed_png_has_the_text_chunk() -> None:
    import io

    data = encode_disclosed_png(np.zeros((8, 8, 3), np.uint8))
    with Image.open(io.BytesIO(data)) as image:
        assert image.info == {"Comment": DISCLOSURE_COMMENT}
