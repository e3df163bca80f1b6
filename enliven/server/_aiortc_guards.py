"""Bounds on what a peer can make aiortc hold: the encoded-frame queue in front of a video decoder, and the
data channel's SCTP reassembly buffer.

Both reach into aiortc's private attributes (checked against aiortc 1.16, like ``_jitter.py``); each
installer returns False and changes nothing if the attribute is not what it expects.

* aiortc hands every complete encoded frame to its decoder thread through an unbounded queue: a
  decoder slower than the sender (a huge frame size, a busy machine) makes it grow without limit.
  ``bound_decoder_queue`` keeps at most a few frames (dropping the oldest, then asking the sender for a
  key frame), and drops VP8 frames whose key frame declares more than ``max_pixels`` pixels before
  they are decoded.
* aiortc reassembles a data-channel message from its SCTP chunks before anyone can see its size,
  whatever the ``max-message-size`` its answer announced. ``cap_sctp_reassembly`` refuses a chunk
  that would make one stream's unfinished message larger than the limit, or open too many streams,
  and reports the peer (the session is then ended).
"""
from __future__ import annotations

import logging
import queue
from collections.abc import Awaitable, Callable
from typing import Any

logger = logging.getLogger(__name__)

DECODER_QUEUE_FRAMES = 4  # encoded frames waiting for the decoder thread; older ones are dropped
VP8_START_CODE = b"\x9d\x01\x2a"


def vp8_key_frame_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) declared by a VP8 key frame's header (RFC 6386 section 9.1); None for other frames."""
    if len(data) < 10 or data[0] & 1 or data[3:6] != VP8_START_CODE:
        return None
    width = int.from_bytes(data[6:8], "little") & 0x3FFF
    height = int.from_bytes(data[8:10], "little") & 0x3FFF
    return width, height


class BoundedDecoderQueue(queue.Queue):  # type: ignore[type-arg]
    """aiortc's decoder input: ``(codec, JitterFrame)`` items or the ``None`` that stops the thread.

    Keeps at most ``max_frames`` frames: when full, the oldest is dropped (``on_drop("behind")``).
    From a VP8 key frame larger than ``max_pixels`` until the next acceptable key frame, every frame
    is dropped (``on_drop("oversized")``): they depend on it and would be decoded at its size.
    """

    def __init__(self, max_frames: int, max_pixels: int, on_drop: Callable[[str], None]) -> None:
        super().__init__()
        self.max_frames = max_frames
        self.max_pixels = max_pixels
        self.on_drop = on_drop
        self._oversized = False

    def _put(self, item: Any) -> None:  # called by Queue.put with the queue's lock held
        if item is not None:
            codec, frame = item
            if getattr(codec, "name", "") == "VP8":
                size = vp8_key_frame_size(bytes(frame.data[:10]))
                if size is not None:
                    self._oversized = size[0] * size[1] > self.max_pixels
            if self._oversized:
                self.on_drop("oversized")
                return
            if len(self.queue) >= self.max_frames and self.queue[0] is not None:
                self.queue.popleft()
                self.on_drop("behind")
        self.queue.append(item)


def bound_decoder_queue(receiver: Any, max_pixels: int, on_drop: Callable[[str], None],
                        max_frames: int = DECODER_QUEUE_FRAMES) -> bool:
    """Give a video RTCRtpReceiver a BoundedDecoderQueue before it starts (its thread takes the queue
    then). A frame dropped for falling behind also asks the sender for a key frame (PLI)."""
    q_attr, error_attr = "_RTCRtpReceiver__decoder_queue", "_RTCRtpReceiver__decoder_error"
    old = getattr(receiver, q_attr, None)
    error = getattr(receiver, error_attr, None)
    if (type(old) is not queue.Queue or old.qsize() or getattr(receiver, "_RTCRtpReceiver__decoder_thread", 1)
            is not None or error is None):
        return False

    def dropped(why: str) -> None:
        if why == "behind":
            error.set()  # the next packet sends a PLI: decoding resumes from a fresh key frame
        on_drop(why)

    setattr(receiver, q_attr, BoundedDecoderQueue(max_frames, max_pixels, dropped))
    return True


def cap_sctp_reassembly(sctp: Any, max_message_bytes: int, max_streams: int,
                        on_violation: Callable[[str], None]) -> bool:
    """Refuse DATA chunks that would hold more than ``max_message_bytes`` of one unfinished message, or
    more than ``max_streams`` streams, on an RTCSctpTransport; ``on_violation(reason)`` is called once."""
    original: Callable[[Any], Awaitable[None]] | None = getattr(sctp, "_receive_data_chunk", None)
    streams = getattr(sctp, "_inbound_streams", None)
    if original is None or not isinstance(streams, dict):
        return False
    reported = False

    async def receive_data_chunk(chunk: Any) -> None:
        nonlocal reported
        stream = streams.get(chunk.stream_id)
        if stream is None:
            too_much = len(streams) >= max_streams
            reason = f"more than {max_streams} data-channel streams"
        else:
            held = sum(len(c.user_data) for c in stream.reassembly)
            too_much = held + len(chunk.user_data) > max_message_bytes
            reason = f"a data-channel message over {max_message_bytes} bytes"
        if too_much:
            if not reported:
                reported = True
                logger.info("peer refused: %s", reason)
                on_violation(reason)
            return
        await original(chunk)

    sctp._receive_data_chunk = receive_data_chunk
    return True
