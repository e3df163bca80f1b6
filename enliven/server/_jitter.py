"""A lower-latency video jitter buffer for aiortc receivers (server and loopback client)."""
from __future__ import annotations

from typing import Any

from aiortc.jitterbuffer import JitterBuffer, JitterFrame


class MarkerJitterBuffer(JitterBuffer):
    """aiortc's video jitter buffer, but a frame is released as soon as its last packet is in.

    aiortc releases a frame only when the first packet of the next frame arrives: one frame
    interval (33-40 ms) of extra latency. Video senders (browsers, aiortc) set the RTP marker bit
    on the last packet of each frame, so a contiguous run of packets ending in a marker is a
    complete frame. A timestamp change still completes a frame whose marker packet was lost.
    Packets without payload (padding) are dropped.
    """

    def _remove_frame(self, sequence_number: int) -> JitterFrame | None:
        while True:
            packets: list[Any] = []
            timestamp: int | None = None
            end: int | None = None
            for count in range(self.capacity):
                packet = self._packets[(self._origin + count) % self.capacity]  # type: ignore[operator]
                if packet is None:
                    break
                if timestamp is None:
                    timestamp = packet.timestamp
                elif packet.timestamp != timestamp:
                    end = count
                    break
                packets.append(packet)
                if packet.marker:
                    end = count + 1
                    break
            if end is None or timestamp is None:
                return None
            data = b"".join(p._data for p in packets)
            self.remove(end)
            if data:
                return JitterFrame(data=data, timestamp=timestamp)


def use_low_latency_jitter_buffer(receiver: Any) -> bool:
    """Swap a video RTCRtpReceiver's jitter buffer for a MarkerJitterBuffer before any packet arrives.

    Reaches into aiortc's private attribute (checked against aiortc 1.16); returns False and changes
    nothing if the attribute is not what it expects.
    """
    attr = "_RTCRtpReceiver__jitter_buffer"
    old = getattr(receiver, attr, None)
    if type(old) is not JitterBuffer or old._origin is not None or not old._is_video:
        return False
    setattr(receiver, attr, MarkerJitterBuffer(capacity=old.capacity, is_video=True))
    return True
