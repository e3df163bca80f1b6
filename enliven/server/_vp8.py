"""A cheaper VP8 encoder for the animated track: aiortc's, without the camera-noise filter and a little faster.

aiortc 1.16's ``Vp8Encoder`` opens libvpx with ``noise-sensitivity 4`` (a temporal denoiser, made for camera
noise) and ``cpu-used -6`` (realtime). The server's frames are rendered, not filmed: the denoiser finds no
noise to remove, only detail, and costs a fifth of the encode. ``LeanVp8Encoder`` opens libvpx as aiortc
does but with ``noise-sensitivity 0`` and ``cpu-used -12``. Measured on 150 consecutive frames of the
built-in demo at 256x256 with a frame-id barcode (``fixtures.demo_output_frames``; one thread on the
2-core EPYC; PSNR of the decoded frames against the sent ones, all three planes, after the first 10):

    bit rate    aiortc (-6, denoiser on)    LeanVp8Encoder (-12, denoiser off)
    250 kbps    0.72 ms, 42.1 dB            0.42 ms, 43.7 dB
    500 kbps    0.83 ms, 43.2 dB            0.48 ms, 46.6 dB
    1 Mbps      1.07 ms, 43.7 dB            0.58 ms, 48.9 dB

and at 512x512 (100 frames): 2.64 -> 1.48 ms, 43.7 -> 45.6 dB at 500 kbps; 3.55 -> 1.87 ms, 44.9 -> 49.1 dB at
1.5 Mbps (aiortc's most).

Everything else (rate control, packetising, picture ids, key frames on request, the bit rate set from
the receiver's REMB) is aiortc's: ``encode`` only opens libvpx itself before aiortc's ``encode`` would,
with the same settings but those two. ``use_lean_vp8_encoder`` gives a sender one before its first frame;
like the other adaptations (_jitter.py, _aiortc_guards.py) it reaches into aiortc's private attributes
(checked against aiortc 1.16) and changes nothing, returning False, when they are not as it expects.
"""
from __future__ import annotations

import multiprocessing
from typing import Any

import av
from aiortc.codecs.vpx import Vp8Encoder, number_of_threads
from av.frame import Frame

CPU_USED = -12  # libvpx speed (realtime: -16 fastest .. -4); aiortc's -6
NOISE_SENSITIVITY = 0  # libvpx temporal denoiser off; aiortc's 4


class LeanVp8Encoder(Vp8Encoder):
    """aiortc's VP8 encoder, opening libvpx with CPU_USED and NOISE_SENSITIVITY instead of aiortc's."""

    def encode(self, frame: Frame, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        if self._must_open(frame):
            self.codec = self._open(frame.width, frame.height)
        return super().encode(frame, force_keyframe)

    def _must_open(self, frame: Frame) -> bool:
        """aiortc's test for a new encoder: none yet, another frame size, or the bit rate off by over 10 %."""
        codec = self.codec
        return (codec is None or frame.width != codec.width or frame.height != codec.height
                or abs(self.target_bitrate - codec.bit_rate) / codec.bit_rate > 0.1)

    def _open(self, width: int, height: int) -> Any:
        """A libvpx encoder set up as aiortc 1.16's ``Vp8Encoder.encode`` sets it up, but for the two options."""
        codec = av.CodecContext.create("libvpx", "w")
        bitrate = self.target_bitrate
        codec.width = width
        codec.height = height
        codec.bit_rate = bitrate
        codec.pix_fmt = "yuv420p"
        codec.gop_size = 3000  # kf_max_dist
        codec.qmin = 2  # rc_min_quantizer
        codec.qmax = 56  # rc_max_quantizer
        codec.options = {
            "bufsize": str(bitrate),  # rc_buf_sz = 1000 ms
            "cpu-used": str(CPU_USED),
            "deadline": "realtime",
            "lag-in-frames": "0",
            "minrate": str(bitrate),  # minrate = maxrate = bit_rate: CBR
            "maxrate": str(bitrate),
            "noise-sensitivity": str(NOISE_SENSITIVITY),
            "overshoot-pct": "15",
            "partitions": "0",  # VP8_ONE_TOKENPARTITION
            "static-thresh": "1",
            "undershoot-pct": "100",
        }
        codec.thread_count = number_of_threads(width * height, multiprocessing.cpu_count())
        return codec


def use_lean_vp8_encoder(transceiver: Any) -> bool:
    """Give a video transceiver's sender a LeanVp8Encoder, when VP8 was negotiated and it has not encoded yet.

    Call after setLocalDescription (the codecs are then negotiated; the first frame comes later, after
    ICE and DTLS). Returns False and changes nothing otherwise.
    """
    attr = "_RTCRtpSender__encoder"
    codecs = getattr(transceiver, "_codecs", None)
    sender = getattr(transceiver, "sender", None)
    if (not codecs or getattr(codecs[0], "mimeType", "").lower() != "video/vp8" or sender is None
            or attr not in vars(sender) or getattr(sender, attr) is not None):
        return False
    setattr(sender, attr, LeanVp8Encoder())
    return True
