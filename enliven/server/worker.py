"""Inference worker processes: the Animators of many sessions, off the server's GIL.

MediaPipe's Python wrapper holds the GIL, so Animators in threads of the server process do not
run in parallel with each other nor with aiortc's decoding/encoding, and several sessions starve
one another (measured: benchmarks/RESULTS.md). A small fixed pool of worker processes (one per
core by default) holds the Animators instead; each session is pinned to one worker, and each
worker animates one frame at a time. Frames travel over a pipe as I420 planes (640x480: 460 KB).

Protocol (a header tuple, then for frames a bytes payload), replies in order:
    ("prepare", sid, upload|None, size, mode, max_pixels, max_bytes) -> ("ok", faces) | ("refused", code, msg)
    ("frame", sid, t_s, height, width, settings|None, reset, echo, delay_s) + I420 bytes
        -> ("out", side, face_found, step_ms) + I420 bytes | ("error", kind, msg)
    ("png", sid) -> ("png", bytes|None);  ("close", sid) -> ("closed", photos_alive)
    ("stats",) -> ("stats", sessions, photos_alive);  ("quit",) -> the process exits
The photo and everything derived from it live only in the worker; "close" drops them and
collects garbage, and the reply says how many photos the worker still holds.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from enliven.engine.disclosure import stamp_disclosure

from .photos import PhotoCounter

logger = logging.getLogger(__name__)

ECHO_ROWS = 16  # rows of the input copied into the output when echo_frame_ids is on (latency probes)
REFUSALS = ("bad_image", "unsupported_format", "image_too_large", "no_face", "face_too_small", "shape")


@dataclass
class _Held:
    animator: Any
    photo: np.ndarray
    size: int
    mode: str
    engine: str


def generators() -> tuple[str, ...]:
    """The generator kinds this engine offers: ("analytic",) or ("analytic", "trained")."""
    from enliven.engine.choices import ENGINES

    return ENGINES


def animator_config(size: int, mode: str, engine: str = "analytic") -> Any:
    """The AnimatorConfig of a session: its face crop only, at ``size``, with ``mode`` and ``engine``."""
    from enliven.engine.animator import AnimatorConfig
    from enliven.engine.motion import TransferMode

    return AnimatorConfig(crop_size_px=size, mode=TransferMode(mode), output="crop", engine=engine)


def _new_animator(size: int, mode: str, engine: str = "analytic") -> Any:
    from enliven.engine.animator import Animator

    return Animator(animator_config(size, mode, engine))


class _Worker:
    def __init__(self) -> None:
        from enliven.engine.defaults import builtin_photo

        self.builtin = builtin_photo()
        self.sessions: dict[str, _Held] = {}
        self._photos = PhotoCounter()

    def photos_alive(self) -> int:
        return self._photos.collected()

    def warm_up(self) -> None:
        """Load MediaPipe and the generator (its ONNX graphs are exported on the first run) before users come."""
        for engine in generators():
            try:
                with _new_animator(256, "relative", engine) as a:
                    a.prepare(self.builtin)
                    a.step(np.zeros((480, 640, 3), np.uint8), t=0.0)
            except Exception as e:  # the server still starts; sessions asking for that engine get its error
                logger.warning("worker: warm-up of the %s engine failed: %s", engine, e)

    def prepare(self, sid: str, upload: bytes | None, size: int, mode: str, engine: str, max_pixels: int,
                max_bytes: int) -> tuple[Any, ...]:
        from enliven.engine.errors import EnlivenError
        from enliven.engine.image_io import load_photo

        self.close(sid)
        try:
            animator = _new_animator(size, mode, engine)
        except EnlivenError as e:
            return ("refused", e.code, str(e))
        try:
            photo = self.builtin.copy() if upload is None else load_photo(upload, max_pixels=max_pixels,
                                                                            max_bytes=max_bytes)
            del upload
            source = animator.prepare(photo)
        except EnlivenError as e:
            animator.close()
            return ("refused", e.code, str(e))
        self._photos.track(photo)
        self.sessions[sid] = _Held(animator, photo, size, mode, engine)
        return ("ok", int(source.face.face_count))

    def frame(self, sid: str, t_s: float, height: int, width: int, settings: tuple[int, str, str] | None,
              reset: bool, echo: bool, delay_s: float, payload: bytes) -> tuple[tuple[Any, ...], bytes]:
        from dataclasses import replace

        import cv2

        from enliven.engine.motion import TransferMode

        held = self.sessions.get(sid)
        if held is None:
            return ("error", "gone", "no such session in this worker"), b""
        if settings is not None:
            size, mode, engine = settings
            if size != held.size or engine != held.engine:
                try:
                    animator = _new_animator(size, mode, engine)
                    animator.prepare(held.photo)
                except Exception as e:  # e.g. no trained weights: keep animating as before
                    logger.warning("worker: cannot switch to %s at %d px: %s", engine, size, type(e).__name__)
                else:
                    held.animator.close()
                    held.animator, held.size, held.mode, held.engine = animator, size, mode, engine
            if mode != held.mode:  # only retargeting reads the mode: keep the calibrated reference
                held.animator.config = replace(held.animator.config, mode=TransferMode(mode))
                held.mode = mode
        if reset:
            held.animator.reset_reference()
        yuv = np.frombuffer(payload, np.uint8).reshape(height * 3 // 2, width)
        rgb = cv2.cvtColor(yuv, cv2.COLOR_YUV2RGB_I420)
        t0 = time.perf_counter()
        out = held.animator.step(rgb, t=t_s)
        if delay_s > 0:  # a slow generator, for backpressure tests
            time.sleep(delay_s)
        step_ms = (time.perf_counter() - t0) * 1e3
        out = np.array(out)  # a writable copy
        stamp_disclosure(out)
        if echo:
            w = min(out.shape[1], rgb.shape[1])
            out[:ECHO_ROWS, :w] = rgb[:ECHO_ROWS, :w]
        side = out.shape[0]
        i420 = cv2.cvtColor(np.ascontiguousarray(out), cv2.COLOR_RGB2YUV_I420)
        return ("out", side, bool(held.animator.last.face_found), step_ms), i420.tobytes()

    def png(self, sid: str) -> bytes | None:
        from enliven.engine.image_io import encode_png

        held = self.sessions.get(sid)
        return None if held is None else encode_png(held.photo)

    def close(self, sid: str) -> None:
        held = self.sessions.pop(sid, None)
        if held is not None:
            held.animator.close()
            del held


def worker_main(conn: Connection) -> None:
    """Entry point of a worker process: serve requests on ``conn`` until "quit" or the pipe closes."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    worker = _Worker()
    worker.warm_up()
    conn.send(("ready", os.getpid()))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        op = msg[0]
        try:
            if op == "frame":
                payload = conn.recv_bytes()
                reply, data = worker.frame(*msg[1:], payload)
                conn.send(reply)
                if reply[0] == "out":
                    conn.send_bytes(data)
            elif op == "prepare":
                conn.send(worker.prepare(*msg[1:]))
            elif op == "png":
                conn.send(("png", worker.png(msg[1])))
            elif op == "close":
                worker.close(msg[1])
                conn.send(("closed", worker.photos_alive()))
            elif op == "stats":
                conn.send(("stats", len(worker.sessions), worker.photos_alive()))
            elif op == "quit":
                return
            else:
                conn.send(("error", "protocol", f"unknown op {op!r}"))
        except (EOFError, OSError, BrokenPipeError):
            return
        except Exception as e:  # one bad request must not kill the other sessions of this worker
            logger.warning("worker: %s failed: %s: %s", op, type(e).__name__, str(e)[:200])
            try:
                conn.send(("error", type(e).__name__, str(e)[:200]))
            except (OSError, BrokenPipeError):
                return
