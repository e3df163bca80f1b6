"""The per-frame session routine (session_animator.py), the worker messages (protocol.py) and a worker's
answers (worker.py), in this process: what the loopback tests run behind a pipe."""
from __future__ import annotations

import multiprocessing
from dataclasses import replace

import cv2
import numpy as np
import pytest
from server_harness import label_mismatch

from enliven.engine.errors import EnlivenError, NoFaceError
from enliven.engine.motion import TransferMode
from enliven.server.protocol import (
    ClosedReply,
    CloseRequest,
    ErrorReply,
    FrameReply,
    FrameRequest,
    PhotoReply,
    PhotoRequest,
    PointsRequest,
    PreparedReply,
    PrepareRequest,
    ProtocolError,
    RefusedReply,
    StatsReply,
    StatsRequest,
    receive,
    send,
)
from enliven.server.session_animator import (
    ECHO_ROWS,
    DebugOptions,
    EngineSettings,
    InferenceOptions,
    SessionAnimator,
    animator_config,
)
from enliven.server.worker import Worker

ANALYTIC = EngineSettings(crop_size_px=256, engine="analytic")  # no generator: nothing to export


@pytest.fixture(scope="module")
def webcam(astronaut: np.ndarray) -> np.ndarray:
    """A 640x480 webcam frame showing the built-in face, (480, 640, 3) uint8 RGB."""
    frame = np.full((480, 640, 3), 90, np.uint8)
    frame[:, 80:560] = cv2.resize(astronaut, (480, 480), interpolation=cv2.INTER_AREA)
    return frame


def _labelled(image: np.ndarray) -> bool:
    """The "AI-generated" label, exactly as stamp_disclosure draws it, in the bottom-right corner."""
    return label_mismatch(image) == 0.0


def test_messages_cross_a_pipe_as_named_types() -> None:
    here, there = multiprocessing.Pipe(duplex=True)
    try:
        planes = np.arange(6 * 4, dtype=np.uint8).tobytes()
        frame = FrameRequest("sid", 1.5, 4, 4, replace(ANALYTIC, mode=TransferMode.ABSOLUTE), True, planes)
        send(here, frame)
        assert receive(there) == frame  # the planes travel beside the header and are joined again
        prepare = PrepareRequest("sid", ANALYTIC, 2, 3, DebugOptions(echo_frame_ids=True), bytes(range(18)))
        send(here, prepare)
        assert receive(there) == prepare  # the photo's pixels travel beside the header too
        send(there, FrameReply(2, True, 3.0, ANALYTIC, bytes(6)))
        assert receive(here) == FrameReply(2, True, 3.0, ANALYTIC, bytes(6))
        here.send(("frame", "sid"))  # a tuple is no message of this protocol
        with pytest.raises(ProtocolError):
            receive(there)
    finally:
        here.close()
        there.close()


def test_refusals_keep_their_kind_across_the_boundary() -> None:
    here, there = multiprocessing.Pipe(duplex=True)
    try:
        send(there, RefusedReply.of(NoFaceError("no face in the photo")))
        reply = receive(here)
    finally:
        here.close()
        there.close()
    assert isinstance(reply, RefusedReply)
    error = reply.error()
    assert type(error) is NoFaceError and str(error) == "no face in the photo" and error.code == "no_face"
    unknown = RefusedReply("no_such_code", "?").error()
    assert type(unknown) is EnlivenError


def test_session_animator_applies_settings_before_a_frame(astronaut: np.ndarray, webcam: np.ndarray) -> None:
    session = SessionAnimator(astronaut.copy(), ANALYTIC, DebugOptions(echo_frame_ids=True))
    try:
        assert session.face_count == 1
        out = session.frame(webcam, t_s=0.0)
        assert out.image.shape == (256, 256, 3) and out.image.dtype == np.uint8 and out.face_found
        assert _labelled(out.image), "every frame carries the disclosure label"
        assert np.array_equal(out.image[:ECHO_ROWS], webcam[:ECHO_ROWS, :256]), "the input's id rows are echoed"
        absolute = replace(ANALYTIC, mode=TransferMode.ABSOLUTE)
        out = session.frame(webcam, t_s=0.04, settings=absolute, reset_reference=True)
        assert session.settings == absolute and out.image.shape == (256, 256, 3)
        larger = replace(absolute, crop_size_px=512)
        out = session.frame(webcam, t_s=0.08, settings=larger)
        assert session.settings == larger and out.image.shape == (512, 512, 3) and _labelled(out.image)
        png = session.photo_png()
        assert png is not None and png.startswith(b"\x89PNG")
    finally:
        session.close()
    assert session.photo is None and session.photo_png() is None
    with pytest.raises(RuntimeError):
        session.frame(webcam, t_s=0.12)
    session.close()  # idempotent


def test_every_streamed_frame_carries_the_sessions_invisible_watermark(astronaut: np.ndarray,
                                                                        webcam: np.ndarray) -> None:
    from enliven.provenance.watermark import detect

    ids = []
    for _ in range(2):
        session = SessionAnimator(astronaut.copy(), ANALYTIC)
        try:
            reads = [detect(session.frame(webcam, t_s=i / 25).image) for i in range(3)]
        finally:
            session.close()
        assert all(r.found for r in reads), "each frame decodes on its own"
        assert len({r.payload.session_hex for r in reads}) == 1  # type: ignore[union-attr]
        ids.append(reads[0].payload.session_hex)  # type: ignore[union-attr]
    assert ids[0] != ids[1], "each session gets its own random id"


def test_worker_answers_each_request(webcam: np.ndarray) -> None:
    worker = Worker()
    reply = worker.handle(PrepareRequest("a", ANALYTIC, 0, 0))  # the built-in photo
    assert reply == PreparedReply(face_count=1)
    i420 = cv2.cvtColor(webcam, cv2.COLOR_RGB2YUV_I420).tobytes()
    reply = worker.handle(FrameRequest("a", 0.0, 480, 640, None, False, i420))
    assert isinstance(reply, FrameReply) and reply.side == 256 and reply.face_found and reply.settings == ANALYTIC
    assert len(reply.i420) == 256 * 256 * 3 // 2
    photo = worker.handle(PhotoRequest("a"))
    assert isinstance(photo, PhotoReply) and photo.png is not None and photo.png.startswith(b"\x89PNG")
    assert worker.handle(StatsRequest()) == StatsReply(sessions=1, photos_alive=1)
    blank = np.full((300, 400, 3), 128, np.uint8)  # decoded pixels (the upload never reaches a worker)
    refused = worker.handle(PrepareRequest("b", ANALYTIC, 300, 400, rgb=blank.tobytes()))
    assert isinstance(refused, RefusedReply) and isinstance(refused.error(), NoFaceError)
    assert "b" not in worker.sessions, "a refused photo leaves no Animator behind"
    assert worker.handle(CloseRequest("a")) == ClosedReply(photos_alive=0), "closing drops the photo"
    gone = worker.handle(FrameRequest("a", 0.1, 480, 640, None, False, i420))
    assert isinstance(gone, ErrorReply) and gone.kind == "gone"
    assert worker.handle(PhotoRequest("a")) == PhotoReply(None)


def test_the_workers_inference_options_reach_every_sessions_animator() -> None:
    """The server's --precision and the worker's thread share become each session's AnimatorConfig, also
    after a switch of size or engine."""
    options = InferenceOptions("int8", threads=1, generator="refiner128s")
    config = animator_config(EngineSettings(engine="trained"), options)
    assert (config.precision, config.generator_threads, config.engine, config.generator) == (
        "int8", 1, "trained", "refiner128s")
    default = animator_config(EngineSettings())
    assert (default.precision, default.generator_threads, default.generator) == ("fp32", None, "refiner128"), \
        "the Animator's own defaults"
    worker = Worker(options)
    assert worker.handle(PrepareRequest("a", ANALYTIC, 0, 0)) == PreparedReply(face_count=1)
    assert worker.sessions["a"].inference == options
    worker.close("a")


def test_a_refused_switch_keeps_and_reports_the_settings_in_use(astronaut: np.ndarray, webcam: np.ndarray,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Stats report the settings a frame was made with: when a new Animator cannot be built (e.g. missing
    weights), the session goes on with the old one and says so."""
    import enliven.server.session_animator as sa

    session = SessionAnimator(astronaut.copy(), ANALYTIC)
    try:
        def refuse(self: object, photo: np.ndarray) -> None:
            raise RuntimeError("no weights here")

        monkeypatch.setattr(sa.Animator, "prepare", refuse)
        out = session.frame(webcam, t_s=0.0, settings=replace(ANALYTIC, crop_size_px=512))
        assert out.settings == ANALYTIC and out.image.shape == (256, 256, 3)
    finally:
        monkeypatch.undo()
        session.close()


def test_face_points_go_through_the_same_routine(astronaut: np.ndarray, webcam: np.ndarray) -> None:
    """SessionAnimator.points: the page's raw points are smoothed as step() smooths its own (the same output),
    labelled and watermarked like every frame; the frame id is drawn in for latency probes; no face eases."""
    from enliven.engine.landmarks import LandmarkTracker
    from enliven.provenance.watermark import detect
    from enliven.server.frame_ids import read_id

    by_frame = SessionAnimator(astronaut.copy(), ANALYTIC)
    by_points = SessionAnimator(astronaut.copy(), ANALYTIC, DebugOptions(echo_frame_ids=True))
    try:
        with LandmarkTracker(smooth=False) as tracker:
            for i in range(3):
                frame = np.roll(webcam, 3 * i, axis=1)
                a = by_frame.frame(frame, t_s=i / 25)
                b = by_points.points(tracker.track(frame, i / 25), t_s=i / 25, frame_id=1000 + i)
                assert b.face_found and _labelled(b.image) and detect(b.image).found
                assert read_id(b.image) == (1000 + i) % 4096
                # as if animated from the frame itself (each session has its own watermark: a few levels apart)
                assert np.abs(a.image[16:].astype(int) - b.image[16:]).mean() < 4.0
        lost = by_points.points(None, t_s=0.2, frame_id=1003)
        assert not lost.face_found and lost.image.shape == (256, 256, 3)
    finally:
        by_frame.close()
        by_points.close()


def test_worker_answers_points_requests(webcam: np.ndarray) -> None:
    from enliven.engine.landmarks import LandmarkTracker

    worker = Worker()
    with LandmarkTracker(smooth=False) as tracker:
        points = tracker.track(webcam, 0.0)
    assert points is not None
    assert worker.handle(PrepareRequest("p", ANALYTIC, 0, 0)) == PreparedReply(face_count=1)  # the built-in photo
    try:
        reply = worker.handle(PointsRequest("p", 0.0, 7, None, False, points.astype("<f4").tobytes()))
        assert isinstance(reply, FrameReply) and reply.side == 256 and reply.face_found and reply.settings == ANALYTIC
        assert len(reply.i420) == 256 * 256 * 3 // 2
        none = worker.handle(PointsRequest("p", 0.04, 8, None, False, None))
        assert isinstance(none, FrameReply) and not none.face_found
    finally:
        worker.close("p")
    gone = worker.handle(PointsRequest("p", 0.1, 9, None, False, None))
    assert isinstance(gone, ErrorReply) and gone.kind == "gone"
