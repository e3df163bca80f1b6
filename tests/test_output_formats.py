"""Tests of enliven.output_formats: formats by extension, refusals before any work, each writer round trip."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from enliven.engine.errors import BadOutputError
from enliven.engine.video_io import DISCLOSURE_COMMENT
from enliven.output_formats import (
    FORMATS,
    GIF_MAX_FPS,
    GIF_MAX_SIDE_PX,
    check_side_output,
    formats_help,
    open_writer,
    resolve_output,
)

pytestmark = pytest.mark.timeout(30)

NTSC = Fraction(30000, 1001)


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    """A photo and a driving video (their bytes only matter for being unchanged)."""
    photo, video = tmp_path / "me.jpg", tmp_path / "driver.mp4"
    photo.write_bytes(b"\xff\xd8\xff photo bytes")
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42 video bytes")
    return {"photo": photo, "driving video": video}


def _listing(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize(("name", "kind", "audio"), [
    ("out.mp4", "mp4", True), ("OUT.MP4", "mp4", True), ("clip.mov", "mov", True), ("a.b.webm", "webm", True),
    ("share.gif", "gif", False), ("frames/", "png", False), (f"frames{os.sep}", "png", False),
])
def test_format_follows_the_extension(tmp_path: Path, inputs: dict[str, Path], name: str, kind: str,
                                      audio: bool) -> None:
    target = resolve_output(f"{tmp_path}{os.sep}{name}", inputs)  # a Path would drop the trailing slash
    assert target.format.kind == kind and target.format.audio == audio
    assert target.path == tmp_path / name.rstrip("/" + os.sep)
    assert str(target).endswith(os.sep) == (kind == "png")
    assert not target.path.exists()  # checking writes nothing


def test_help_names_every_format_and_the_gif_caps() -> None:
    text = formats_help()
    for suffix in (".mp4", ".mov", ".webm", ".gif", "DIR/"):
        assert suffix in text
    assert f"{GIF_MAX_FPS:g} fps" in text and f"{GIF_MAX_SIDE_PX} px" in text
    assert [f.kind for f in FORMATS] == ["mp4", "mov", "webm", "gif", "png"]


def _refusal(output: str | Path, inputs: dict[str, Path], match: str) -> None:
    folder = Path(next(iter(inputs.values()))).parent
    before = _listing(folder)
    with pytest.raises(BadOutputError, match=match) as info:
        resolve_output(str(output), inputs)
    assert info.value.code == "bad_output" and "\n" not in str(info.value)
    assert _listing(folder) == before


def test_refuses_the_inputs_by_path_and_by_inode(tmp_path: Path, inputs: dict[str, Path]) -> None:
    photo, video = inputs["photo"], inputs["driving video"]
    _refusal(video, inputs, r"'.*driver.mp4' is the driving video")
    _refusal(photo, inputs, "is the photo")  # before its .jpg extension is looked at
    (tmp_path / "sub").mkdir()
    _refusal(tmp_path / "sub" / ".." / "driver.mp4", inputs, "is the driving video")
    os.link(video, tmp_path / "hard.mov")
    _refusal(tmp_path / "hard.mov", inputs, "hard.mov' is the driving video")
    (tmp_path / "soft.gif").symlink_to(photo)
    _refusal(tmp_path / "soft.gif", inputs, "soft.gif' is the photo")
    (tmp_path / "linked").symlink_to(tmp_path)
    _refusal(f"{tmp_path / 'linked' / 'me.jpg'}/", inputs, "is the photo")
    assert resolve_output(str(tmp_path / "other.mp4"), {"photo": None, "driving video": video})  # built-in photo


@pytest.mark.parametrize(("name", "match"), [
    ("out.avi", (r"expected an output ending in \.mp4, \.mov, \.webm, \.gif or a folder ending in /; "
                 r".*has the extension '\.avi'")),
    ("out", "has no extension$"),
    ("sub", r"has no extension \(it is a folder: add a trailing / to write PNG frames into it\)"),
    ("sub.mp4", "is a folder"),
    ("nowhere/out.mp4", r"expected the output in an existing folder; '.*nowhere' does not exist"),
    ("me.jpg/out.mp4", "is not a folder"),
    ("", "got an empty one"),
])
def test_refuses_what_it_cannot_write(tmp_path: Path, inputs: dict[str, Path], name: str, match: str) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub.mp4").mkdir()
    _refusal(tmp_path / name if name else "", inputs, match)


def test_refuses_a_folder_it_cannot_write_in(tmp_path: Path, inputs: dict[str, Path]) -> None:
    if os.geteuid() == 0:  # permissions do not stop root; /proc refuses new files to everyone
        locked = Path("/proc")
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
    with pytest.raises(BadOutputError, match=r"expected the output in a folder that can be written; cannot write in"):
        resolve_output(str(locked / "out.mp4"), inputs)
    assert not (locked / "out.mp4").exists()


def test_a_frames_folder_is_replaced_only_if_it_holds_only_frames(tmp_path: Path, inputs: dict[str, Path]) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    assert resolve_output(f"{frames}/", inputs).format.kind == "png"  # empty
    (frames / "frame_000000.png").write_bytes(b"old")
    assert resolve_output(f"{frames}/", inputs).format.kind == "png"  # an earlier run's
    (frames / "holiday.jpg").write_bytes(b"keep me")
    _refusal(f"{frames}/", inputs, r"expected a new or empty folder for PNG frames .* holds holiday.jpg")
    _refusal(f"{tmp_path}/", inputs, "expected a folder for PNG frames that does not hold the photo")
    _refusal(f"{tmp_path / 'frames' / 'holiday.jpg'}/", inputs, "is a file")


def test_the_strip_is_checked_like_the_output(tmp_path: Path, inputs: dict[str, Path]) -> None:
    assert check_side_output(tmp_path / "strip.png", inputs, "the strip") == tmp_path / "strip.png"
    with pytest.raises(BadOutputError, match="the strip '.*me.jpg' is the photo"):
        check_side_output(inputs["photo"], inputs, "the strip")
    with pytest.raises(BadOutputError, match="does not exist"):
        check_side_output(tmp_path / "nowhere" / "strip.png", inputs, "the strip")


# ---------------------------------------------------------------- each format, written and read back


def _voice(path: Path, seconds: float = 2.0, rate: int = 44100) -> Path:
    """A mono AAC sine wave."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=rate, layout="mono")
        t = np.arange(round(seconds * rate)) / rate
        samples = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
        for at in range(0, samples.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, at:at + 1024]), format="fltp",
                                               layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = rate, at, Fraction(1, rate)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


@pytest.mark.parametrize(("name", "frames", "fps", "audio", "video_codec", "audio_codec"), [
    ("out.mp4", 30, NTSC, True, "h264", "aac"),
    ("out.mov", 30, NTSC, True, "h264", "aac"),
    ("out.webm", 30, NTSC, True, "vp9", "opus"),
    ("out.gif", 15, NTSC / 2, False, "gif", None),
])
def test_each_video_format_round_trip(tmp_path: Path, name: str, frames: int, fps: Fraction, audio: bool,
                                      video_codec: str, audio_codec: str | None) -> None:
    voice = _voice(tmp_path / "voice.m4a")
    target = resolve_output(f"{tmp_path}{os.sep}{name}", {"photo": None})
    with open_writer(target, NTSC, (96, 64), audio_from=voice) as writer:
        for index in range(30):
            writer.write(np.full((64, 96, 3), (index * 8, 120, 200), np.uint8))
    assert (writer.frames_written, writer.rate, writer.has_audio) == (frames, fps, audio)
    with av.open(str(target.path)) as container:
        video = container.streams.video[0]
        assert video.codec_context.name == video_codec
        assert sum(1 for _ in container.decode(video)) == frames
        tags = {k.lower(): v for k, v in container.metadata.items()}  # WebM's tag is COMMENT
        assert tags["comment"] == DISCLOSURE_COMMENT
        assert [s.codec_context.name for s in container.streams.audio] == ([audio_codec] if audio else [])
        duration_s = container.duration / av.time_base
    assert duration_s == pytest.approx(30 / NTSC, abs=0.1)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, "voice.m4a"])


def test_png_frames_round_trip(tmp_path: Path) -> None:
    target = resolve_output(f"{tmp_path / 'frames'}/", {"photo": None})
    with open_writer(target, NTSC, (96, 64), audio_from=_voice(tmp_path / "voice.m4a")) as writer:
        for _ in range(7):
            writer.write(np.zeros((64, 96, 3), np.uint8))
    assert (writer.frames_written, writer.rate, writer.has_audio) == (7, NTSC, False)
    assert len(list(target.path.glob("frame_*.png"))) == 7


@pytest.mark.parametrize("name", ["out.mp4", "out.webm", "out.gif", "frames/"])
def test_a_failed_write_leaves_the_previous_output(tmp_path: Path, name: str) -> None:
    target = resolve_output(f"{tmp_path}{os.sep}{name}", {"photo": None})
    if target.format.kind == "png":
        target.path.mkdir()
        (target.path / "frame_000000.png").write_bytes(b"previous")
    else:
        target.path.write_bytes(b"previous")
    before = _listing(tmp_path)
    with pytest.raises(KeyboardInterrupt), open_writer(target, 25, (64, 64)) as writer:
        writer.write(np.zeros((64, 64, 3), np.uint8))
        raise KeyboardInterrupt
    assert _listing(tmp_path) == before
