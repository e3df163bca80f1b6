"""``enliven cam``: the animated photo into a virtual camera, with a fake webcam and a fake virtual camera; what
it says when pyvirtualcam or a virtual camera device is missing."""
from __future__ import annotations

import builtins
import sys
import types

import numpy as np
import pytest

from enliven import cam
from enliven.cam import CamConfig, CamError, run_cam
from enliven.cli import main


class FakeWebcam:
    def __init__(self, frames: list[np.ndarray | None]) -> None:
        self.frames = frames
        self.i = 0
        self.closed = False

    def read(self) -> np.ndarray | None:
        frame = self.frames[self.i % len(self.frames)]
        self.i += 1
        return frame

    def close(self) -> None:
        self.closed = True


class FakeVirtualCamera:
    device = "/dev/video-fake"

    def __init__(self) -> None:
        self.sent: list[np.ndarray] = []
        self.closed = False

    def send(self, frame: np.ndarray) -> None:
        self.sent.append(frame.copy())

    def sleep_until_next_frame(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


@pytest.fixture(scope="module")
def webcam_frames(astronaut: np.ndarray) -> list[np.ndarray]:
    import cv2

    frames = []
    for shift in (0, 6, 12, 6):
        canvas = np.full((480, 640, 3), 60, np.uint8)
        canvas[:, 80:560] = cv2.resize(astronaut, (480, 480), interpolation=cv2.INTER_AREA)
        frames.append(np.roll(canvas, shift, axis=1))
    return frames


def test_cam_sends_labelled_watermarked_frames_that_move(astronaut: np.ndarray, webcam_frames: list[np.ndarray]) -> None:
    from enliven.provenance.watermark import detect

    source, sink = FakeWebcam([*webcam_frames, None]), FakeVirtualCamera()  # a webcam that sometimes has nothing
    report = run_cam(astronaut, source, sink, CamConfig(size_px=256, engine="analytic"), max_frames=8)
    assert report.frames == 8 and report.face_frames == 8 and "8 frames" in report.summary()
    assert all(f.shape == (256, 256, 3) and f.dtype == np.uint8 for f in sink.sent)
    corner = sink.sent[-1][-20:, -100:].astype(np.int16)
    assert corner.min() < 60 and corner.max() > 180, "the AI-generated label is burned into every frame"
    assert detect(sink.sent[-1]).found, "and the session's invisible watermark"
    assert max(float(np.abs(f.astype(np.int16) - sink.sent[0]).mean()) for f in sink.sent[1:]) > 1.0


def test_cam_stops_when_the_webcam_does(astronaut: np.ndarray) -> None:
    with pytest.raises(CamError, match="no frame"):
        run_cam(astronaut, FakeWebcam([None]), FakeVirtualCamera(), CamConfig(engine="analytic"))


def test_missing_pyvirtualcam_is_one_line_naming_the_extra(monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    real_import = builtins.__import__

    def no_pyvirtualcam(name: str, *args: object, **kwargs: object) -> object:
        if name == "pyvirtualcam":
            raise ImportError("No module named 'pyvirtualcam'")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "pyvirtualcam", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_pyvirtualcam)
    assert main(["cam"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install 'enliven[cam]'" in err, err


def test_no_virtual_camera_device_is_one_line_naming_what_to_install(monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    fake = types.ModuleType("pyvirtualcam")

    class Camera:
        def __init__(self, *args: object, **kwargs: object) -> None:
            raise RuntimeError("'v4l2loopback' backend: no device found\n(more detail)")

    fake.Camera = Camera  # type: ignore[attr-defined]
    fake.PixelFormat = types.SimpleNamespace(RGB="RGB")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pyvirtualcam", fake)
    assert main(["cam", "--engine", "analytic"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "v4l2loopback" in err and "OBS" in err, err


def test_cam_cli_runs_with_a_virtual_camera(monkeypatch: pytest.MonkeyPatch, webcam_frames: list[np.ndarray],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    sink = FakeVirtualCamera()
    source = FakeWebcam(webcam_frames)
    monkeypatch.setattr(cam, "open_virtual_camera", lambda size, fps, device: sink)
    monkeypatch.setattr(cam, "Webcam", lambda index, fps: source)
    real_run = cam.run_cam
    monkeypatch.setattr(cam, "run_cam", lambda *a, **k: real_run(*a, **k, max_frames=3))
    assert main(["cam", "--engine", "analytic", "--size", "256"]) == 0
    out = capsys.readouterr().out
    assert "/dev/video-fake" in out and "3 frames" in out
    assert len(sink.sent) == 3 and sink.closed and source.closed
