"""Video files for the offline CLI: decode a driving video, encode the animated result (PyAV).

``DrivingVideo`` yields upright (H, W, 3) uint8 RGB frames. ``VideoWriter`` writes MP4 or MOV
(H.264 + AAC) or WebM (VP9 + Opus), yuv420p at an exact frame rate, optionally with the audio of
another file re-encoded and aligned to the first video frame, and always with the
synthetic-media disclosure in the container's ``comment`` tag.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Self

import av
import numpy as np

from enliven.engine.errors import BadVideoError, ShapeError

logger = logging.getLogger(__name__)

FALLBACK_FPS = 25.0  # when a file states no frame rate
DISCLOSURE_COMMENT = "AI-generated with enliven (synthetic media)"


@dataclass(frozen=True)
class VideoContainer:
    """How VideoWriter encodes one kind of file: the muxer and its video and audio encoders."""

    muxer: str  # FFmpeg muxer name
    video_codec: str  # FFmpeg encoder of the video stream (always yuv420p)
    video_options: dict[str, str]  # the video encoder's options (quality, speed)
    audio_codec: str  # FFmpeg encoder of the audio stream, when there is one
    audio_rates: frozenset[int]  # sample rates, Hz, the audio encoder takes; others are resampled to 48 kHz
    audio_bit_rate: int  # bits per second
    muxer_options: dict[str, str] = field(default_factory=dict)


_AAC_SAMPLE_RATES = frozenset({96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000})
_MOV_FLAGS = {"movflags": "+faststart+use_metadata_tags"}  # the index first; free-form tags kept
_H264 = {"crf": "18", "preset": "veryfast"}
# VP9 in constant quality (b=0). On the 512x512 demo: realtime at cpu-used 6 took 7 ms a frame where
# "good" at cpu-used 5 took 43, for the same PSNR (40.1 dB) and 15% more bytes.
_VP9 = {"crf": "32", "b": "0", "deadline": "realtime", "cpu-used": "6", "row-mt": "1"}
VIDEO_CONTAINERS: dict[str, VideoContainer] = {  # by the kind of file
    "mp4": VideoContainer("mp4", "libx264", _H264, "aac", _AAC_SAMPLE_RATES, 128_000, _MOV_FLAGS),
    "mov": VideoContainer("mov", "libx264", _H264, "aac", _AAC_SAMPLE_RATES, 128_000, _MOV_FLAGS),
    "webm": VideoContainer("webm", "libvpx-vp9", _VP9, "libopus", frozenset({48000, 24000, 16000, 12000, 8000}),
                           96_000),
}


# Demuxers FFmpeg may use (its format_whitelist): common containers only, so that a text file
# is not read as "tty" ANSI art nor a PNG as a one-frame video, and less parser code is exposed.
_VIDEO_DEMUXERS = "mov,matroska,avi,mpegts"  # MP4/MOV/M4A, MKV/WebM, AVI, MPEG-TS
_VIDEO_KINDS = "a video file (MP4, MOV, MKV, WebM, AVI or MPEG-TS)"
_AUDIO_DEMUXERS = _VIDEO_DEMUXERS + ",wav,mp3,flac,ogg,aac"
_AUDIO_KINDS = "a video or audio file (MP4, MOV, M4A, MKV, WebM, AVI, MPEG-TS, WAV, MP3, FLAC, Ogg or AAC)"


def _open_input(path: str, demuxers: str = _VIDEO_DEMUXERS, kinds: str = _VIDEO_KINDS) -> av.container.InputContainer:
    """The file opened for reading; BadVideoError if it is missing or not of the allowed kinds."""
    if not os.path.isfile(path):
        what = "is a directory" if os.path.isdir(path) else "does not exist"
        raise BadVideoError(f"expected {kinds}; {path!r} {what}")
    try:
        return av.open(path, mode="r", options={"format_whitelist": demuxers})
    except (av.FFmpegError, OSError) as e:
        # EINVAL here: the format_whitelist refused what FFmpeg detected.
        reason = (
            "not one of these formats" if isinstance(e, av.error.ArgumentError) else getattr(e, "strerror", None) or e
        )
        raise BadVideoError(f"expected {kinds}; cannot open {path!r} ({reason})") from e


class DrivingVideo:
    """The frames of a video file, in order, upright (the display rotation is applied).

    Attributes: fps (frames per second; the average rate, else 25); rate (the same, exact);
        num_frames (an estimate, None if unknown); size ((width, height) of the yielded
        frames, pixels); has_audio.
    Iterating (once) yields (H, W, 3) uint8 RGB frames.
    Raises: BadVideoError when the file is missing, not a video, has no video stream or
        cannot be decoded (at open for the first frame, while iterating for later ones).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._container = _open_input(self.path)
        try:
            if not self._container.streams:
                raise BadVideoError(f"expected {_VIDEO_KINDS}; {self.path!r} has no readable stream (truncated?)")
            if not self._container.streams.video:
                kinds = sorted({stream.type for stream in self._container.streams})
                raise BadVideoError(f"expected a video stream in {self.path!r}; found only {', '.join(kinds)}")
            self._stream = self._container.streams.video[0]
            self._stream.thread_type = "AUTO"
            self.has_audio = bool(self._container.streams.audio)
            rate = self._stream.average_rate or self._stream.guessed_rate
            self.rate = Fraction(rate) if rate else Fraction(FALLBACK_FPS)
            self.fps = float(self.rate)
            self.num_frames = self._estimate_num_frames()
            self._frames = self._container.decode(self._stream)
            self._first: np.ndarray | None = self._next_frame()
            if self._first is None:
                raise BadVideoError(f"expected video frames in {self.path!r}; none could be decoded")
            self.size = (self._first.shape[1], self._first.shape[0])
        except BaseException:
            self._container.close()
            raise
        self._started = False

    def _estimate_num_frames(self) -> int | None:
        if self._stream.frames > 0:
            return int(self._stream.frames)
        if self._stream.duration is not None and self._stream.time_base is not None:
            seconds = float(self._stream.duration * self._stream.time_base)
        elif self._container.duration is not None:
            seconds = self._container.duration / av.time_base
        else:
            return None
        return max(1, round(seconds * self.fps))

    def _next_frame(self) -> np.ndarray | None:
        """The next frame as upright (H, W, 3) uint8 RGB, or None at the end."""
        try:
            frame = next(self._frames, None)
        except av.FFmpegError as e:
            raise BadVideoError(f"expected a decodable video; {self.path!r} failed ({e})") from e
        if frame is None:
            return None
        rgb = frame.to_ndarray(format="rgb24")
        quarter_turns = round(frame.rotation / 90) % 4  # rotation: counter-clockwise degrees to display
        return np.ascontiguousarray(np.rot90(rgb, quarter_turns)) if quarter_turns else rgb

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._started:
            raise RuntimeError("a DrivingVideo can be iterated only once; open the file again")
        self._started = True
        frame, self._first = self._first, None
        count = 0
        while frame is not None:
            yield frame
            count += 1
            frame = self._next_frame()
        if self._stream.frames > count:
            logger.warning(
                "%s: decoded %d of %d frames; the file may be truncated", self.path, count, self._stream.frames
            )

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def check_rgb_frame(frame: np.ndarray, size: tuple[int, int]) -> None:
    """ShapeError unless ``frame`` is (H, W, 3) uint8 with (W, H) == size."""
    width, height = size
    if not isinstance(frame, np.ndarray) or frame.shape != (height, width, 3) or frame.dtype != np.uint8:
        got = f"{frame.shape} {frame.dtype}" if isinstance(frame, np.ndarray) else type(frame).__name__
        raise ShapeError(f"expected a ({height}, {width}, 3) uint8 RGB frame; got {got}")


class VideoWriter:
    """Encodes RGB frames to a video file (yuv420p, BT.709 limited range): MP4, MOV or WebM.

    Args: path: the output, of the kind ``container`` says whatever its suffix; written to a
        temporary file next to it and renamed on a clean close, removed if the ``with`` block raises.
        fps: frames per second; a float is turned into the nearest fraction with a
        denominator <= 1001 (29.97002997 -> 30000/1001); a Fraction is kept as is.
        size: (width, height) of the frames given to write(), pixels. An odd side is padded
        by one pixel (a copy of the last row or column) because yuv420p needs even sides.
        audio_from: a media file whose first audio stream is re-encoded (AAC; Opus in WebM),
            starting with the first video frame and cut at the last one; no audio track if it has none.
        container: a key of VIDEO_CONTAINERS: "mp4" and "mov" (H.264 + AAC), "webm" (VP9 + Opus).
        metadata: container tags added to ``comment`` = DISCLOSURE_COMMENT (which wins).
    Raises: BadVideoError if audio_from cannot be opened or decoded; ValueError for a bad
        fps or size; ShapeError from write() for a frame of the wrong shape or dtype.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fps: float | Fraction,
        size: tuple[int, int],
        *,
        audio_from: str | os.PathLike[str] | None = None,
        container: str = "mp4",
        metadata: dict[str, str] | None = None,
    ) -> None:
        if container not in VIDEO_CONTAINERS:
            raise ValueError(f"expected a container in {sorted(VIDEO_CONTAINERS)}; got {container!r}")
        if not (isinstance(fps, Fraction) or math.isfinite(fps)) or fps <= 0:
            raise ValueError(f"expected a positive frame rate; got {fps}")
        width, height = size
        if width < 2 or height < 2:
            raise ValueError(f"expected a frame size of at least 2x2 px; got {width}x{height}")
        self.path = Path(path)
        self.rate = fps if isinstance(fps, Fraction) else Fraction(fps).limit_denominator(1001)
        self.size = (int(width), int(height))
        self.encoded_size = (width + width % 2, height + height % 2)  # what the file holds
        self.frames_written = 0
        self._partial = self.path.with_name(f".{self.path.name}.partial")
        self.container = VIDEO_CONTAINERS[container]
        tags = {**(metadata or {}), "comment": DISCLOSURE_COMMENT}
        spec = self.container
        self._container = av.open(str(self._partial), mode="w", format=spec.muxer, options=spec.muxer_options)
        self._closed = False
        try:
            self._container.metadata.update(tags)
            video = self._container.add_stream(spec.video_codec, rate=self.rate, options=spec.video_options)
            assert isinstance(video, av.video.stream.VideoStream), spec.video_codec
            self._video = video
            self._video.width, self._video.height = self.encoded_size
            self._video.pix_fmt = "yuv420p"
            self._frame_time_base = 1 / self.rate  # of frame pts; the muxer may change the stream's
            self._video.codec_context.time_base = self._frame_time_base
            context = self._video.codec_context
            context.colorspace = context.color_primaries = context.color_trc = 1  # BT.709
            context.color_range = 1  # limited ("MPEG")
            self._audio = _AudioTrack(os.fspath(audio_from), self._container, spec) if audio_from is not None else None
        except BaseException:
            self._container.close()
            self._partial.unlink(missing_ok=True)
            raise

    def write(self, frame: np.ndarray) -> None:
        """Append one frame: (H, W, 3) uint8 RGB with (W, H) == size."""
        check_rgb_frame(frame, self.size)
        width, height = self.size
        pad_w, pad_h = self.encoded_size[0] - width, self.encoded_size[1] - height
        if pad_w or pad_h:
            frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        rgb = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        yuv = rgb.reformat(format="yuv420p", dst_colorspace="ITU709", dst_color_range="MPEG")
        yuv.pts = self.frames_written
        yuv.time_base = self._frame_time_base
        self._container.mux(self._video.encode(yuv))
        self.frames_written += 1
        if self._audio is not None:
            self._audio.write_until(self.frames_written / self.rate)

    @property
    def has_audio(self) -> bool:
        """Whether the file gets an audio track (audio_from had one)."""
        return self._audio is not None and self._audio.stream is not None

    def close(self, *, keep: bool = True) -> None:
        """Flush the encoders and finish the file; keep=False (or no frame written) discards it."""
        if self._closed:
            return
        self._closed = True
        container = self._container
        try:
            if keep and self.frames_written == 0:
                logger.warning("no frames were written; %s is not made", self.path)
                keep = False
            if keep:
                container.mux(self._video.encode(None))
                if self._audio is not None:
                    self._audio.finish(self.frames_written / self.rate)
            container.close()  # writes the trailer (and moves the index to the front)
        except BaseException:
            keep = False
            raise
        finally:
            if self._audio is not None:
                self._audio.close()
            if keep:
                os.replace(self._partial, self.path)
            else:
                container.close()
                self._partial.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close(keep=error is None)


class _AudioTrack:
    """The first audio stream of a file, re-encoded into an output container (AAC or Opus).

    Samples are timed from the source's first video frame (or its first audio sample when it
    has no video): audio that starts later is preceded by silence, audio that starts earlier
    is cut. ``write_until`` interleaves it with the video; ``finish`` cuts it at the end.
    """

    def __init__(self, path: str, output: av.container.OutputContainer, spec: VideoContainer) -> None:
        self.path = path
        self._input = _open_input(path, _AUDIO_DEMUXERS, _AUDIO_KINDS)
        self._output = output
        self.stream: av.audio.stream.AudioStream | None = None
        self._samples_out = 0  # samples encoded so far
        self._pending: np.ndarray | None = None  # (channels, n) float32 decoded but not yet encoded
        if not self._input.streams.audio:
            logger.info("%s has no audio stream; writing video only", path)
            return
        source = self._input.streams.audio[0]
        self.rate = source.rate if source.rate in spec.audio_rates else 48000
        self.layout = "mono" if source.channels == 1 else "stereo"
        self._resampler = av.AudioResampler(format="fltp", layout=self.layout, rate=self.rate)
        videos = self._input.streams.video
        # Where sample 0 of the output lies on the source's clock; None: at its first audio sample.
        self._origin_s = None
        if videos and videos[0].start_time is not None and videos[0].time_base is not None:
            self._origin_s = float(videos[0].start_time * videos[0].time_base)
        self._chunks = self._decoded_chunks(source)
        self._pending = next(self._chunks, None)  # fail now, not after the first video frame
        self.stream = output.add_stream(spec.audio_codec, rate=self.rate, layout=self.layout,
                                        bit_rate=spec.audio_bit_rate)
        self._time_base = Fraction(1, self.rate)  # of frame pts, in samples

    def _decoded_chunks(self, source: av.audio.stream.AudioStream) -> Iterator[np.ndarray]:
        """(channels, n) float32 chunks at self.rate, from the video's first frame on."""
        skip = 0  # samples still to drop: audio from before the first video frame
        try:
            for frame in itertools.chain(self._input.decode(source), [None]):  # None flushes the resampler
                for resampled in self._resampler.resample(frame):
                    chunk = resampled.to_ndarray()
                    if frame is not None and self._origin_s is not None:  # the first chunk
                        known = frame.pts is not None and frame.time_base is not None
                        start_s = float(frame.pts * frame.time_base) if known else self._origin_s  # type: ignore[operator]
                        offset = round((start_s - self._origin_s) * self.rate)
                        self._origin_s = None
                        if offset > 0:
                            yield np.zeros((chunk.shape[0], offset), np.float32)
                        skip = -offset
                    if skip > 0:
                        dropped = min(skip, chunk.shape[1])
                        chunk, skip = chunk[:, dropped:], skip - dropped
                    if chunk.shape[1]:
                        yield chunk
        except av.FFmpegError as e:
            raise BadVideoError(f"expected decodable audio; {self.path!r} failed ({e})") from e

    def write_until(self, seconds: Fraction | float) -> None:
        """Encode and mux audio up to `seconds` after the first video frame (or its end)."""
        if self.stream is None:
            return
        target = round(seconds * self.rate)
        while self._samples_out < target:
            if self._pending is None or self._pending.shape[1] == 0:
                self._pending = next(self._chunks, None)
                if self._pending is None:
                    return  # the audio is shorter than the video
            take = min(self._pending.shape[1], target - self._samples_out)
            samples, self._pending = self._pending[:, :take], self._pending[:, take:]
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples), format="fltp", layout=self.layout)
            frame.sample_rate = self.rate
            frame.pts = self._samples_out
            frame.time_base = self._time_base
            self._output.mux(self.stream.encode(frame))
            self._samples_out += take

    def finish(self, seconds: Fraction | float) -> None:
        """Write the audio up to the end of the video, then flush the encoder."""
        if self.stream is None:
            return
        self.write_until(seconds)
        self._output.mux(self.stream.encode(None))

    def close(self) -> None:
        self._input.close()
