"""The `enliven` command as a user runs it: real files in, real mp4 out, one-line errors."""
from __future__ import annotations

import subprocess
import sys
from fractions import Fraction

import av
import numpy as np
import pytest

from enliven.cli import main
from enliven.engine.video_io import DISCLOSURE_COMMENT, DrivingVideo, VideoWriter
from enliven.fixtures import driving_frames

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def driving_clip(tmp_path_factory):
    """A 2 s 640x480 driving clip at 30000/1001 fps with a 440 Hz audio track."""
    folder = tmp_path_factory.mktemp("clip")
    audio = folder / "tone.m4a"
    with av.open(str(audio), "w") as out:
        stream = out.add_stream("aac", rate=48000)
        t = np.arange(48000 * 2) / 48000
        samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
        for k in range(0, samples.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, k:k + 1024]), format="fltp",
                                               layout="mono")
            frame.sample_rate = 48000
            frame.pts = k
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    clip = folder / "driver.mp4"
    frames = driving_frames(640, 480, fps=30.0, stride=5)[:60]
    with VideoWriter(clip, Fraction(30000, 1001), (640, 480), audio_from=str(audio)) as writer:
        for f in frames:
            writer.write(f)
    return clip


def test_animate_keeps_fps_and_audio_and_marks_the_file(driving_clip, tmp_path, astronaut):
    from enliven.engine.image_io import encode_jpeg

    photo = tmp_path / "me.jpg"
    photo.write_bytes(encode_jpeg(astronaut))
    out = tmp_path / "out.mp4"
    strip = tmp_path / "strip.png"
    assert main(["animate", str(photo), str(driving_clip), "-o", str(out), "--strip", str(strip),
                 "--no-progress"]) == 0
    with DrivingVideo(out) as video:
        assert video.rate == Fraction(30000, 1001)
        assert video.size == (512, 512)
        assert video.has_audio
        frames = list(video)
    assert len(frames) == 60
    assert np.abs(frames[0].astype(int) - astronaut).mean() < 8  # the photo itself, animated
    with av.open(str(out)) as c:
        assert c.metadata.get("comment") == DISCLOSURE_COMMENT
    assert strip.exists() and strip.stat().st_size > 10_000


def test_no_arguments_render_the_builtin_demo(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["--no-progress", "--size", "256", "--crop"]) == 0
    with DrivingVideo(tmp_path / "enliven-demo.mp4") as video:
        assert video.size == (256, 256) and video.fps == 25.0
        assert sum(1 for _ in video) == 250
    assert "enliven-demo.mp4" in capsys.readouterr().out


@pytest.mark.parametrize("content, expected", [
    (b"", "empty"),
    (b"just text", "JPEG, PNG or WebP"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, "PNG"),
])
def test_bad_photos_give_one_clear_line(tmp_path, content, expected):
    photo = tmp_path / "bad.jpg"
    photo.write_bytes(content)
    run = subprocess.run([sys.executable, "-m", "enliven.cli", "animate", str(photo)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith("enliven: error:")
    assert expected.lower() in run.stderr.lower()


def test_photo_without_a_face_and_bad_video(tmp_path, capsys, driving_clip):
    from enliven.engine.image_io import encode_png

    blank = tmp_path / "wall.png"
    blank.write_bytes(encode_png(np.full((300, 400, 3), 180, np.uint8)))
    assert main(["animate", str(blank), str(driving_clip), "-o", str(tmp_path / "x.mp4"), "--no-progress"]) == 2
    assert "no face" in capsys.readouterr().err
    assert not (tmp_path / "x.mp4").exists()
    assert main(["animate", str(driving_clip), str(blank), "-o", str(tmp_path / "y.mp4")]) == 2
    assert "error" in capsys.readouterr().err
