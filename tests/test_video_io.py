"""Tests of enliven.engine.video_io: round trips through real MP4 files made here with PyAV."""

from __future__ import annotations

import io
import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from enliven.engine.errors import BadVideoError, ShapeError
from enliven.engine.video_io import DISCLOSURE_COMMENT, DrivingVideo, VideoWriter

pytestmark = pytest.mark.timeout(10)

NTSC = Fraction(30000, 1001)


# ---------------------------------------------------------------- fixtures made here


def _sine(seconds: float, rate: int, channels: int, hz: float = 440.0) -> np.ndarray:
    """(channels, n) float32 sine at amplitude 0.5."""
    t = np.arange(round(seconds * rate)) / rate
    return np.repeat((0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)[None], channels, axis=0)


def _mux_audio(
    container: av.container.OutputContainer, stream: av.audio.stream.AudioStream, samples: np.ndarray, start: int = 0
) -> None:
    """Encode (channels, n) float32 samples as frames of 1000, the first at pts `start` (in samples)."""
    for at in range(0, samples.shape[1], 1000):
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples[:, at : at + 1000]), format="fltp", layout=stream.layout.name
        )
        frame.sample_rate = stream.rate
        frame.pts = start + at
        frame.time_base = Fraction(1, stream.rate)
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def _make_audio(path: Path, seconds: float = 2.0, rate: int = 44100, layout: str = "stereo") -> Path:
    """An .m4a (AAC) sine-wave file."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=rate, layout=layout)
        _mux_audio(container, stream, _sine(seconds, rate, 1 if layout == "mono" else 2))
    return path


def _make_video(
    path: Path,
    frames: list[np.ndarray],
    fps: int | Fraction = 30,
    *,
    first_pts: int = 0,
    audio: np.ndarray | None = None,
    audio_start: int = 0,
    rate: int = 44100,
) -> Path:
    """An MP4 (H.264, optional mono AAC) of (H, W, 3) uint8 frames; pts in frames and samples."""
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        sound = container.add_stream("aac", rate=rate, layout="mono") if audio is not None else None
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = first_pts + index, 1 / Fraction(fps)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if sound is not None and audio is not None:
            _mux_audio(container, sound, audio, audio_start)
    return path


def _flat(height: int, width: int, colour: tuple[int, int, int] = (200, 30, 30)) -> np.ndarray:
    return np.full((height, width, 3), colour, np.uint8)


def _png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 20, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def _decoded_audio(path: Path) -> tuple[np.ndarray, int]:
    """(n,) float32 first channel of the first audio stream, and its sample rate."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        return np.concatenate([frame.to_ndarray()[0] for frame in container.decode(stream)]), stream.rate


def _seconds(stream: av.stream.Stream, field: str) -> float:
    """A stream's start_time or duration in seconds (it must be stated)."""
    value, time_base = getattr(stream, field), stream.time_base
    assert value is not None and time_base is not None, f"{field} missing"
    return float(value * time_base)


def _rms(samples: np.ndarray, rate: int, start_s: float, end_s: float) -> float:
    return float(np.sqrt(np.mean(samples[int(start_s * rate) : int(end_s * rate)] ** 2)))


# ---------------------------------------------------------------- writer: round trips


def test_ntsc_rate_with_audio_round_trip(tmp_path: Path) -> None:
    source = _make_audio(tmp_path / "voice.m4a", seconds=2.0)
    out = tmp_path / "out.mp4"
    with VideoWriter(out, NTSC, (64, 48), audio_from=source) as writer:
        for index in range(30):
            writer.write(_flat(48, 64, (index * 8, 100, 200)))
    assert not list(tmp_path.glob(".*partial"))
    video_s = 30 * 1001 / 30000

    with DrivingVideo(out) as video:
        assert video.rate == NTSC and video.fps == pytest.approx(29.97003, abs=1e-5)
        assert video.num_frames == 30 and video.size == (64, 48) and video.has_audio
        frames = list(video)
    assert len(frames) == 30 and frames[0].shape == (48, 64, 3) and frames[0].dtype == np.uint8
    np.testing.assert_allclose(frames[29][20, 30], (232, 100, 200), atol=6)

    with av.open(str(out)) as container:
        assert container.metadata["comment"] == DISCLOSURE_COMMENT
        v, a = container.streams.video[0], container.streams.audio[0]
        assert v.codec_context.name == "h264" and v.codec_context.pix_fmt == "yuv420p"
        assert a.codec_context.name == "aac" and a.rate == 44100 and a.channels == 2
        assert _seconds(v, "start_time") == pytest.approx(0, abs=0.01)
        assert _seconds(a, "start_time") == pytest.approx(0, abs=0.01)
        assert _seconds(v, "duration") == pytest.approx(video_s, abs=0.01)
        assert _seconds(a, "duration") == pytest.approx(video_s, abs=0.1)  # cut at the last frame
    samples, rate = _decoded_audio(out)
    assert len(samples) / rate == pytest.approx(video_s, abs=0.1)
    assert _rms(samples, rate, 0.1, 0.9) == pytest.approx(0.5 / np.sqrt(2), rel=0.1)  # the sine came through


def test_float_fps_keeps_the_exact_fraction(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    with VideoWriter(out, 30000 / 1001, (32, 32)) as writer:
        assert writer.rate == NTSC
        for _ in range(3):
            writer.write(_flat(32, 32))
    with DrivingVideo(out) as video:
        assert video.rate == NTSC


def test_without_audio(tmp_path: Path) -> None:
    silent_source = _make_video(tmp_path / "silent.mp4", [_flat(48, 64)] * 5)
    for audio_from in (None, silent_source):
        out = tmp_path / "out.mp4"
        with VideoWriter(out, 25, (64, 48), audio_from=audio_from) as writer:
            for _ in range(10):
                writer.write(_flat(48, 64))
        with DrivingVideo(out) as video:
            assert not video.has_audio and video.num_frames == 10 and video.fps == 25.0
            assert len(list(video)) == 10


def test_odd_size_is_padded_to_even(tmp_path: Path) -> None:
    image = _flat(49, 65, (20, 200, 20))
    image[:, -1] = (200, 20, 20)  # last column red: the pad copies it
    out = tmp_path / "odd.mp4"
    with VideoWriter(out, 25, (65, 49)) as writer:
        assert writer.encoded_size == (66, 50)
        for _ in range(4):
            writer.write(image)
    with DrivingVideo(out) as video:
        assert video.size == (66, 50)
        frame = next(iter(video))
    assert frame.shape == (50, 66, 3)
    np.testing.assert_allclose(frame[10, 10], (20, 200, 20), atol=8)
    np.testing.assert_allclose(frame[49, 65], (200, 20, 20), atol=8)


def test_metadata_is_written_and_the_disclosure_cannot_be_replaced(tmp_path: Path) -> None:
    out = tmp_path / "tagged.mp4"
    with VideoWriter(
        out, 25, (32, 32), metadata={"title": "demo", "enliven_model": "gen-v1", "comment": "real"}
    ) as writer:
        writer.write(_flat(32, 32))
    with av.open(str(out)) as container:
        tags = container.metadata
    assert tags["comment"] == DISCLOSURE_COMMENT
    assert tags["title"] == "demo" and tags["enliven_model"] == "gen-v1"


def test_colours_survive_the_round_trip(tmp_path: Path) -> None:
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (128, 128, 128), (250, 240, 10)]
    out = tmp_path / "colours.mp4"
    with VideoWriter(out, 25, (32, 32)) as writer:
        for colour in colours:
            writer.write(_flat(32, 32, colour))
    with DrivingVideo(out) as video:
        for colour, frame in zip(colours, video, strict=True):
            np.testing.assert_allclose(frame[8:24, 8:24].mean(axis=(0, 1)), colour, atol=4)


@pytest.mark.parametrize(("container", "video_codec", "audio_codec", "audio_rate"), [
    ("mov", "h264", "aac", 44100),
    ("webm", "vp9", "opus", 48000),  # Opus has no 44.1 kHz: resampled
])
def test_other_containers_round_trip(tmp_path: Path, container: str, video_codec: str, audio_codec: str,
                                     audio_rate: int) -> None:
    source = _make_audio(tmp_path / "voice.m4a", seconds=2.0)
    out = tmp_path / f"out.{container}"
    with VideoWriter(out, NTSC, (64, 48), audio_from=source, container=container) as writer:
        for index in range(30):
            writer.write(_flat(48, 64, (index * 8, 100, 200)))
    assert writer.has_audio
    with DrivingVideo(out) as video:
        assert video.rate == NTSC and video.size == (64, 48) and video.has_audio
        frames = list(video)
    assert len(frames) == 30
    np.testing.assert_allclose(frames[29][20, 30], (232, 100, 200), atol=8)
    with av.open(str(out)) as opened:
        assert {k.lower(): v for k, v in opened.metadata.items()}["comment"] == DISCLOSURE_COMMENT
        v, a = opened.streams.video[0], opened.streams.audio[0]
        assert v.codec_context.name == video_codec and v.codec_context.pix_fmt == "yuv420p"
        assert a.codec_context.name == audio_codec and a.rate == audio_rate
    samples, rate = _decoded_audio(out)
    assert len(samples) / rate == pytest.approx(30 / NTSC, abs=0.1)
    assert _rms(samples, rate, 0.1, 0.9) == pytest.approx(0.5 / np.sqrt(2), rel=0.1)


def test_unknown_container(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"expected a container in \['mov', 'mp4', 'webm'\]; got 'avi'"):
        VideoWriter(tmp_path / "out.avi", 25, (32, 32), container="avi")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- writer: audio alignment


def test_audio_that_starts_late_is_preceded_by_silence(tmp_path: Path) -> None:
    rate = 44100
    source = _make_video(
        tmp_path / "late.mp4", [_flat(48, 64)] * 30, 30, audio=_sine(0.5, rate, 1), audio_start=rate // 2, rate=rate
    )
    out = tmp_path / "out.mp4"
    with VideoWriter(out, 30, (64, 48), audio_from=source) as writer:
        for _ in range(30):
            writer.write(_flat(48, 64))
    samples, rate = _decoded_audio(out)
    assert _rms(samples, rate, 0.0, 0.45) < 0.01
    assert _rms(samples, rate, 0.55, 0.95) > 0.3
    assert len(samples) / rate == pytest.approx(1.0, abs=0.1)


def test_audio_before_the_first_video_frame_is_cut(tmp_path: Path) -> None:
    rate = 44100
    loud_then_quiet = np.concatenate([_sine(0.5, rate, 1), np.zeros((1, rate), np.float32)], axis=1)
    source = _make_video(
        tmp_path / "early.mp4", [_flat(48, 64)] * 30, 30, first_pts=15, audio=loud_then_quiet, rate=rate
    )
    with av.open(str(source)) as container:  # video starts at 0.5 s, audio at 0
        video = container.streams.video[0]
        assert _seconds(video, "start_time") == pytest.approx(0.5, abs=0.01)
    out = tmp_path / "out.mp4"
    with VideoWriter(out, 30, (64, 48), audio_from=source) as writer:
        for _ in range(30):
            writer.write(_flat(48, 64))
    samples, rate = _decoded_audio(out)
    assert _rms(samples, rate, 0.05, 0.95) < 0.01  # the loud half second lay before the video


def test_mono_pcm_at_an_odd_rate_is_resampled_to_aac(tmp_path: Path) -> None:
    wav = tmp_path / "odd.wav"
    with av.open(str(wav), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=37800, layout="mono")
        samples = (_sine(1.0, 37800, 1) * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = 37800, 0, Fraction(1, 37800)
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    out = tmp_path / "out.mp4"
    with VideoWriter(out, 25, (32, 32), audio_from=wav) as writer:
        for _ in range(12):
            writer.write(_flat(32, 32))
    with av.open(str(out)) as container:
        audio = container.streams.audio[0]
        assert audio.codec_context.name == "aac" and audio.rate == 48000 and audio.channels == 1
        assert _seconds(audio, "duration") == pytest.approx(12 / 25, abs=0.05)


def test_audio_shorter_than_the_video_ends_early(tmp_path: Path) -> None:
    source = _make_audio(tmp_path / "short.m4a", seconds=0.3)
    out = tmp_path / "out.mp4"
    with VideoWriter(out, 25, (32, 32), audio_from=source) as writer:
        for _ in range(25):
            writer.write(_flat(32, 32))
    samples, rate = _decoded_audio(out)
    assert len(samples) / rate == pytest.approx(0.3, abs=0.1)
    with DrivingVideo(out) as video:
        assert video.num_frames == 25


# ---------------------------------------------------------------- writer: errors


def test_write_rejects_wrong_frames(tmp_path: Path) -> None:
    with VideoWriter(tmp_path / "out.mp4", 25, (32, 24)) as writer:
        for bad in (_flat(32, 24), np.zeros((24, 32, 3), np.float32), np.zeros((24, 32), np.uint8)):
            with pytest.raises(ShapeError, match=r"expected a \(24, 32, 3\) uint8"):
                writer.write(bad)
        writer.write(_flat(24, 32))


def test_error_in_the_block_leaves_no_file(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    with pytest.raises(KeyError), VideoWriter(out, 25, (32, 32)) as writer:
        writer.write(_flat(32, 32))
        raise KeyError("boom")
    assert list(tmp_path.iterdir()) == []


def test_no_frames_makes_no_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with VideoWriter(tmp_path / "out.mp4", 25, (32, 32), audio_from=_make_audio(tmp_path / "a.m4a", 0.5)):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.m4a"]
    assert "no frames were written" in caplog.text


@pytest.mark.parametrize(("fps", "size"), [(0, (32, 32)), (-1.0, (32, 32)), (float("nan"), (32, 32)), (25, (1, 32))])
def test_bad_writer_arguments(tmp_path: Path, fps: float, size: tuple[int, int]) -> None:
    with pytest.raises(ValueError):
        VideoWriter(tmp_path / "out.mp4", fps, size)


def test_unreadable_audio_source(tmp_path: Path) -> None:
    with pytest.raises(BadVideoError, match="does not exist"):
        VideoWriter(tmp_path / "out.mp4", 25, (32, 32), audio_from=tmp_path / "missing.m4a")
    (tmp_path / "notes.txt").write_text("not audio\n" * 50)
    with pytest.raises(BadVideoError):
        VideoWriter(tmp_path / "out.mp4", 25, (32, 32), audio_from=tmp_path / "notes.txt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


# ---------------------------------------------------------------- reader


def test_reader_yields_rgb_frames_in_order(tmp_path: Path) -> None:
    frames = [_flat(48, 64, (value, 128, 255 - value)) for value in range(0, 250, 25)]
    path = _make_video(tmp_path / "in.mp4", frames, 30)
    with DrivingVideo(path) as video:
        assert (video.size, video.num_frames, video.fps, video.has_audio) == ((64, 48), 10, 30.0, False)
        got = list(video)
        with pytest.raises(RuntimeError, match="once"):
            list(video)
    assert len(got) == 10
    for want, frame in zip(frames, got, strict=True):
        np.testing.assert_allclose(frame.mean(axis=(0, 1)), want[0, 0], atol=6)


def test_reader_applies_the_display_rotation(tmp_path: Path) -> None:
    image = _flat(48, 64, (0, 0, 0))
    image[:24, :32] = (255, 0, 0)  # red top-left quadrant
    data = _make_video(tmp_path / "flat.mp4", [image] * 3).read_bytes()
    identity = struct.pack(">9i", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    quarter_turn = struct.pack(">9i", 0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)  # what phones write
    at = data.index(identity, data.index(b"tkhd"))
    rotated = tmp_path / "portrait.mp4"
    rotated.write_bytes(data[:at] + quarter_turn + data[at + 36 :])
    with DrivingVideo(rotated) as video:
        assert video.size == (48, 64)
        frame = next(iter(video))
    assert frame.shape == (64, 48, 3)
    assert frame[5, -5, 0] > 200 and frame[5, 5, 0] < 50  # turned clockwise: red now top-right


def test_bad_inputs_raise_bad_video_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello\n" * 100)  # FFmpeg alone reads it as "tty" ANSI art
    (tmp_path / "still.png").write_bytes(_png_bytes())  # FFmpeg alone reads it as a one-frame video
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(20_000))
    whole = _make_video(tmp_path / "whole.mp4", [_flat(48, 64)] * 10).read_bytes()
    (tmp_path / "cut.mp4").write_bytes(whole[: len(whole) // 2])  # the index (moov) is at the end
    cases = {
        "missing.mp4": "does not exist",
        ".": "is a directory",
        "notes.txt": "not one of these formats",
        "still.png": "not one of these formats",
        "empty.mp4": "cannot open",
        "noise.mp4": "cannot open",
        "cut.mp4": "no readable stream",
    }
    for name, message in cases.items():
        with pytest.raises(BadVideoError, match=message) as info:
            DrivingVideo(tmp_path / name)
        assert info.value.code == "bad_video"


def test_audio_only_file_has_no_video_stream(tmp_path: Path) -> None:
    with pytest.raises(BadVideoError, match=r"expected a video stream .* found only audio"):
        DrivingVideo(_make_audio(tmp_path / "voice.m4a", seconds=0.5))


def test_truncated_file_with_its_index_first_yields_what_is_there(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    whole = tmp_path / "whole.mp4"
    with VideoWriter(whole, 25, (64, 48)) as writer:  # faststart: the index comes before the frames
        for index in range(20):
            writer.write(_noisy(48, 64, index))
    data = whole.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with DrivingVideo(cut) as video:
        assert video.num_frames == 20
        got = len(list(video))
    assert 0 < got < 20
    assert "may be truncated" in caplog.text


def _noisy(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_matroska_without_a_frame_count_gets_an_estimate(tmp_path: Path) -> None:
    path = _make_video(tmp_path / "clip.mkv", [_flat(48, 64)] * 12, 24)
    with DrivingVideo(path) as video:
        assert video.fps == 24.0 and video.num_frames is not None and abs(video.num_frames - 12) <= 1
        assert len(list(video)) == 12
