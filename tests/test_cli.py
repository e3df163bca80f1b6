"""The `enliven` command as a user runs it: real files in, real mp4 out, one-line errors."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

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


# ---------------------------------------------------------------- outputs: refusals before any work


def _listing(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` with its bytes (None for a folder): what a refusal must leave as it was."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


@pytest.fixture
def inputs(tmp_path, driving_clip, astronaut):
    """A photo (me.jpg), a driving video (driver.mp4), a hard link to it, a symlink to the photo and a folder
    of holiday photos, side by side in tmp_path."""
    from enliven.engine.image_io import encode_jpeg

    photo, video = tmp_path / "me.jpg", tmp_path / "driver.mp4"
    photo.write_bytes(encode_jpeg(astronaut))
    shutil.copyfile(driving_clip, video)
    os.link(video, tmp_path / "hard.mp4")
    (tmp_path / "soft.gif").symlink_to(photo)
    (tmp_path / "holiday").mkdir()
    (tmp_path / "holiday" / "beach.jpg").write_bytes(b"not ours")
    return photo, video


def _locked_folder(tmp_path: Path) -> Path:
    if os.geteuid() == 0:  # permissions do not stop root; /proc refuses new files to everyone
        return Path("/proc")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    return locked


@pytest.mark.parametrize(("args", "expected"), [
    (["-o", "{video}"], "driver.mp4' is the driving video"),
    (["-o", "{photo}"], "me.jpg' is the photo"),
    (["-o", "{tmp}/sub/../driver.mp4"], "is the driving video"),
    (["-o", "{tmp}/hard.mp4"], "hard.mp4' is the driving video"),
    (["-o", "{tmp}/soft.gif"], "soft.gif' is the photo"),
    (["-o", "{tmp}/nowhere/out.mp4"], "nowhere' does not exist"),
    (["-o", "{locked}/out.mp4"], "cannot write in"),
    (["-o", "{tmp}/out.avi"], "expected an output ending in .mp4, .mov, .webm, .gif or a folder ending in /"),
    (["-o", "{tmp}/out"], "has no extension"),
    (["-o", "{tmp}/holiday/"], "holds beach.jpg"),
    (["-o", "{tmp}/out.mp4", "--strip", "{photo}"], "the strip"),
])
def test_outputs_that_would_lose_an_input_or_cannot_be_written_are_refused_first(
        tmp_path, inputs, monkeypatch, capsys, args, expected):
    import enliven.offline

    def no_work(*_args, **_kwargs):
        raise AssertionError("the animation started")

    monkeypatch.setattr(enliven.offline, "animate_video", no_work)
    monkeypatch.setattr(enliven.offline, "animate_builtin", no_work)
    (tmp_path / "sub").mkdir()
    photo, video = inputs
    names = {"photo": photo, "video": video, "tmp": tmp_path, "locked": _locked_folder(tmp_path)}
    before = _listing(tmp_path)
    assert main(["animate", str(photo), str(video), *(a.format(**names) for a in args), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("enliven: error: ") and expected in err[0], err
    assert _listing(tmp_path) == before  # no file made, the inputs unchanged byte for byte


def test_output_naming_the_driving_video_is_refused_in_a_real_process(tmp_path, inputs):
    photo, video = inputs
    before = video.read_bytes()
    run = subprocess.run([sys.executable, "-m", "enliven.cli", "animate", str(photo), str(video), "-o", str(video)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 2
    expected = (f"enliven: error: the output {str(video)!r} is the driving video {str(video)!r}; "
                "writing it would replace the driving video: choose another path")
    assert run.stderr.strip().splitlines() == [expected]
    assert video.read_bytes() == before and run.stdout == ""


# ---------------------------------------------------------------- outputs: formats by extension


@pytest.mark.parametrize(("name", "summary"), [
    ("out.mov", "(MOV, 512x512, 60 frames at 29.97 fps, with audio)"),
    ("out.webm", "(WebM, 512x512, 60 frames at 29.97 fps, with audio)"),
    ("out.gif", "(GIF, 480x480, 30 frames at 14.99 fps, no audio)"),
    ("frames/", "(PNG frames, 512x512, 60 frames at 29.97 fps, no audio)"),
])
def test_animate_writes_the_format_its_output_names(tmp_path, driving_clip, astronaut, capsys, name, summary):
    from PIL import Image

    from enliven.engine.image_io import encode_jpeg

    photo = tmp_path / "me.jpg"
    photo.write_bytes(encode_jpeg(astronaut))
    output = f"{tmp_path}/{name}"
    assert main(["animate", str(photo), str(driving_clip), "-o", output, "--engine", "analytic", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {output} {summary}" in out
    if name == "frames/":
        names = sorted(p.name for p in (tmp_path / "frames").iterdir())
        assert names == [f"frame_{i:06d}.png" for i in range(60)]
        with Image.open(tmp_path / "frames" / names[0]) as first:
            assert first.info["Comment"] == DISCLOSURE_COMMENT
        with av.open(f"{tmp_path}/frames/frame_%06d.png", format="image2", options={"framerate": "30000/1001"}) as c:
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        assert len(frames) == 60 and frames[0].shape == (512, 512, 3)
        assert np.abs(frames[0].astype(int) - astronaut).mean() < 8
        return
    with av.open(output) as c:
        tags = {k.lower(): v for k, v in c.metadata.items()}  # WebM's tag is COMMENT
        assert tags["comment"] == DISCLOSURE_COMMENT
        assert bool(c.streams.audio) == (name != "out.gif")
        decoded = list(c.decode(video=0))
        pts, frames = [f.pts for f in decoded], [f.to_ndarray(format="rgb24") for f in decoded]
    if name == "out.gif":  # every 2nd frame, 15 fps at most, timed in whole centiseconds
        assert len(frames) == 30 and frames[0].shape == (480, 480, 3)
        assert pts == [round(i * 100 * 2002 / 30000) for i in range(30)]
        corner = frames[0][-24:, -100:].astype(int)  # the "AI-generated" label: white text on black
        assert (corner.max(axis=2) < 40).mean() > 0.4 and (corner.min(axis=2) > 200).mean() > 0.05
    else:
        with DrivingVideo(output) as video:
            assert video.rate == Fraction(30000, 1001) and video.size == (512, 512) and video.has_audio
        assert len(frames) == 60
        assert np.abs(frames[0].astype(int) - astronaut).mean() < 8


# ---------------------------------------------------------------- outputs: an interrupted run


def _wait_for(condition, timeout_s: float, what: str) -> None:
    """Poll ``condition`` until it holds; AssertionError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def long_driving_clip(driving_clip, tmp_path_factory):
    """The driving clip five times over (300 frames, 10 s, with its audio): long enough to interrupt."""
    with DrivingVideo(driving_clip) as video:
        frames = list(video)
    clip = tmp_path_factory.mktemp("long") / "long.mp4"
    with VideoWriter(clip, Fraction(30000, 1001), (640, 480), audio_from=str(driving_clip)) as writer:
        for frame in frames * 5:
            writer.write(frame)
    return clip


@pytest.mark.parametrize("name", ["out.mp4", "out.gif", "frames/"])
def test_an_interrupted_run_leaves_the_previous_output_and_nothing_partial(tmp_path, long_driving_clip, astronaut,
                                                                           name):
    from enliven.engine.image_io import encode_jpeg

    photo = tmp_path / "me.jpg"
    photo.write_bytes(encode_jpeg(astronaut))
    output = f"{tmp_path}/{name}"
    if name.endswith("/"):
        (tmp_path / "frames").mkdir()
        (tmp_path / "frames" / "frame_000000.png").write_bytes(b"an earlier run")
    else:
        Path(output).write_bytes(b"an earlier run")
    before = _listing(tmp_path)
    # The mp4 runs the pipelined path (a driving video: a landmark child process); the others the built-in motion.
    driver = [str(long_driving_clip)] if name == "out.mp4" else []
    # SIGINT back to its default in the child: a suite started in the background of a shell (SIGINT ignored, and
    # inherited) would otherwise start a CLI that Python never gives a KeyboardInterrupt.
    proc = subprocess.Popen([sys.executable, "-m", "enliven.cli", "animate", str(photo), *driver, "-o", output,
                             "--engine", "analytic"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    stderr = bytearray()

    def read_stderr() -> None:
        assert proc.stderr is not None
        while chunk := proc.stderr.read1():
            stderr.extend(chunk)

    reader = threading.Thread(target=read_stderr)
    reader.start()

    def progress() -> tuple[int, int]:  # (frames done, of) from the last progress bar update
        found = re.findall(rb"(\d+)/(\d+) \[", bytes(stderr))
        return (int(found[-1][0]), int(found[-1][1])) if found else (0, 1)

    try:
        _wait_for(lambda: progress()[0] >= 10 or proc.poll() is not None, 120, "10 frames animated")
        done, total = progress()
        assert proc.poll() is None and done < total, bytes(stderr).decode()  # mid-way
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
        reader.join(timeout=10)
    assert bytes(stderr).decode().strip().splitlines()[-1] == "enliven: interrupted"
    assert _listing(tmp_path) == before  # the earlier output intact, no partial file or folder


@pytest.mark.parametrize("argv, expected", [
    (["--gain", "nose=1"], "unknown gain 'nose'; expected one of head_rotation, head_position, eyes, gaze, brows"),
    (["--gain", "mouth=2.5"], "gain mouth must be from 0 to 2; got 2.5"),
    (["--gain", "head_rotation=1.6"], "gain head_rotation must be from 0 to 1.5"),
    (["--gain", "eyes"], "expected NAME=VALUE"),
    (["--gain", "gaze=lots"], "gain gaze must be a number"),
    (["--gain", "brows=nan"], "gain brows must be a number from 0 to 2"),
    (["--eyes", "shut"], "invalid choice: 'shut'"),
])
def test_bad_gains_and_eye_modes_give_one_clear_line(argv, expected, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["animate", *argv])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


def test_gains_and_eyes_reach_the_animation(driving_clip, tmp_path, astronaut):
    """--gain mouth=0 (with --eyes open and a gaze gain beside it): the driver talks, the photo keeps its own mouth
    (MediaPipe on the output); the same run at the default gains does talk. (The clip samples the driver's blinks
    too sparsely to judge the lids here; test_controls does.)"""
    from enliven.engine import topology as topo
    from enliven.engine.image_io import encode_png
    from enliven.engine.landmarks import LandmarkTracker

    photo = tmp_path / "me.png"
    photo.write_bytes(encode_png(astronaut))

    def mouth_and_lids(argv: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Mouth opening and lid opening per output frame, measured by MediaPipe."""
        out = tmp_path / "out.mp4"
        assert main(["animate", str(photo), str(driving_clip), "-o", str(out), "--crop", "--engine", "analytic",
                     "--no-progress", *argv]) == 0
        mouth, lids = [], []
        with DrivingVideo(out) as video, LandmarkTracker(smooth=False) as meter:
            for i, frame in enumerate(video):
                points = meter.track(frame, i / 30)
                if points is not None:
                    mouth.append(topo.mouth_opening(points))
                    lids.append(sum(topo.eye_opening(points)))
        return np.array(mouth), np.array(lids)

    mouth, _ = mouth_and_lids([])
    kept_mouth, kept_lids = mouth_and_lids(["--gain", "mouth=0", "--gain", "gaze=1.5", "--eyes", "open"])
    print(f"mouth opening range {np.ptp(mouth):.3f} -> {np.ptp(kept_mouth):.3f} with mouth=0")
    assert np.ptp(mouth) > 0.15 and np.ptp(kept_mouth) < 0.25 * np.ptp(mouth)
    assert kept_lids.min() > 0.8 * kept_lids.max()
