"""``enliven verify``: is this image or video marked by enliven? The watermark, and a C2PA manifest if any.

A video is read frame by frame (at most ``MAX_FRAMES``, evenly spread); each frame is decoded
on its own, and the frames' soft coded bits are also added up and decoded once. A video counts
as watermarked when that combined decode passes the CRC, or when at least two frames decode
to the same payload; an image when its one frame decodes.
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from enliven.engine.errors import EnlivenError
from enliven.engine.image_io import load_photo
from enliven.engine.video_io import DrivingVideo
from enliven.provenance.c2pa_sign import ManifestReport, read_manifest
from enliven.provenance.payload import CODED_BITS, Payload, conv_encode
from enliven.provenance.watermark import SYNC_Z_MIN, decode_soft, detect

MAX_FRAMES = 300  # frames of a video examined, evenly spread
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp"})
_COMBINE_Z_MIN = SYNC_Z_MIN - 1.0  # frames whose sync clears this join the combined decode


@dataclass(frozen=True)
class VerifyReport:
    path: Path
    kind: str  # "image" or "video"
    frames_checked: int
    frames_marked: int  # frames whose own decode gave ``payload``
    payload: Payload | None  # the watermark's payload, None when none was found
    confidence: float  # 0..1: agreement of the received coded bits with the payload's (0 when none found)
    manifest: ManifestReport | None  # the C2PA manifest, None when the file has none

    @property
    def found(self) -> bool:
        return self.payload is not None

    def summary(self) -> str:
        if self.found:
            line = (f"{self.path}: enliven watermark FOUND: {self.payload} (confidence {self.confidence:.2f}; "
                    f"{self.frames_marked} of {self.frames_checked} {self.kind} frames decoded on their own)")
        else:
            line = f"{self.path}: no enliven watermark found ({self.frames_checked} {self.kind} frames checked)"
        m = self.manifest
        if m is None:
            return line + "\nC2PA: no manifest"
        ai = "AI-generated (trainedAlgorithmicMedia)" if m.ai_generated else "no AI-generation assertion"
        problems = f"; problems: {', '.join(m.errors)}" if m.errors else ""
        session = f"; watermark session {m.watermark_session}" if m.watermark_session else ""
        return (line + f"\nC2PA: manifest {m.validation_state}, {ai}, by {m.generator}, signed by {m.signer}"
                f"{session}{problems}")


def _frames(path: Path) -> tuple[str, list[np.ndarray]]:
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return "image", [load_photo(path)]
    with DrivingVideo(path) as video:
        total = video.num_frames or MAX_FRAMES
        stride = max(1, -(-total // MAX_FRAMES))
        frames = [f for i, f in enumerate(video) if i % stride == 0][:MAX_FRAMES]
    return "video", frames


def verify_file(path: str | os.PathLike[str]) -> VerifyReport:
    """Look for enliven's watermark (and C2PA manifest) in an image (JPEG/PNG/WebP) or a video.

    Raises: BadImageError / UnsupportedFormatError / BadVideoError (EnlivenError) for unreadable input.
    """
    p = Path(path)
    if not p.is_file():
        raise EnlivenError(f"expected an image or video file; {str(p)!r} "
                           f"{'is a directory' if p.is_dir() else 'does not exist'}")
    kind, frames = _frames(p)
    detections = [detect(f) for f in frames if min(f.shape[:2]) >= 16]
    counts = Counter(d.payload for d in detections if d.payload is not None)
    payload, marked = counts.most_common(1)[0] if counts else (None, 0)
    combined = np.zeros(CODED_BITS, np.float32)
    for d in detections:
        if d.sync_z >= _COMBINE_Z_MIN:
            combined += d.soft_bits
    joint = decode_soft(combined) if combined.any() else None
    if kind == "video" and marked < 2 and joint is None:
        payload = None  # one lone frame is not enough in a video
    elif joint is not None and (payload is None or marked < 2):
        payload = joint
    confidence = 0.0
    if payload is not None:
        expected = 2.0 * conv_encode(payload.to_bits()) - 1.0
        confidence = float(np.clip(2 * np.mean(np.sign(combined) == expected) - 1, 0, 1)) if combined.any() else 0.0
    manifest = read_manifest(p)
    return VerifyReport(p, kind, len(detections), marked if payload is not None else 0, payload, confidence,
                        manifest if manifest.present else None)
