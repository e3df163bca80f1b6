"""Landmark cache: MediaPipe FaceMesh run once over every clip of the data set, kept outside the repo.

One file per clip, ``<cache_dir>/landmarks/<clip stem>.npz``, holding
  points  (F, 478, 3) float32, frame pixels (NaN where no face was found)
  fps     float, frames per second
  size    (2,) int, (width, height) of the frames
  key     str, "<bytes>-<mtime_ns>" of the clip it was made from (a changed clip is redone)
Files are written atomically, so an interrupted build resumes where it stopped.
"""
from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..engine.defaults import cache_root, data_root
from ..engine.errors import EnlivenError
from ..engine.landmarks import LandmarkTracker
from ..engine.topology import NUM_LANDMARKS
from ..engine.video_io import DrivingVideo

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = cache_root()
DEFAULT_DATA_DIR = data_root()  # $ENLIVEN_DATA, default ../shared/data from the checkout
SPLITS = ("train", "val")


class ManifestRow(NamedTuple):
    """One row of the data set's MANIFEST.tsv (the fields the trainer uses)."""

    file: str  # path relative to the data directory, e.g. "clips/x.mp4"
    kind: str  # "clip" or "still"
    person_id: str
    split: str  # "train" or "val"
    frames: int
    fps: float


def read_manifest(data_dir: Path, kind: str | None = "clip", split: str | None = None) -> list[ManifestRow]:
    """Rows of ``data_dir/MANIFEST.tsv``, optionally only of one kind and one split.

    Raises: EnlivenError if the manifest is missing or lacks a needed column, or a split is unknown.
    """
    path = Path(data_dir) / "MANIFEST.tsv"
    if split is not None and split not in SPLITS:
        raise EnlivenError(f"split must be one of {SPLITS}; got {split!r}")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
    except FileNotFoundError as e:
        raise EnlivenError(f"no MANIFEST.tsv in {data_dir}: pass the data directory (--data)") from e
    out = []
    for r in rows:
        try:
            row = ManifestRow(r["file"], r["kind"], r["person_id"], r["split"], int(r["frames"] or 0),
                              float(r["fps"] or 0.0))
        except (KeyError, ValueError) as e:
            raise EnlivenError(f"{path}: malformed row {r!r} ({e})") from e
        if (kind is None or row.kind == kind) and (split is None or row.split == split):
            out.append(row)
    return out


@dataclass(frozen=True)
class ClipLandmarks:
    """The cached landmarks of one clip."""

    row: ManifestRow
    points: np.ndarray  # (F, 478, 3) float32, frame pixels; NaN where no face
    fps: float
    size: tuple[int, int]  # (width, height) pixels

    @property
    def found(self) -> np.ndarray:
        """(F,) bool, frames with a face."""
        return np.isfinite(self.points[:, 0, 0])


def _source_key(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}-{st.st_mtime_ns}"


def cache_file(cache_dir: Path, row: ManifestRow) -> Path:
    return Path(cache_dir) / "landmarks" / (Path(row.file).stem + ".npz")


def track_clip(path: Path) -> tuple[np.ndarray, float, tuple[int, int]]:
    """MediaPipe FaceMesh (tracking mode, unsmoothed) over every frame of a clip.

    Returns points (F, 478, 3) float32 (NaN rows where no face), fps, (width, height).
    """
    frames: list[np.ndarray] = []
    nan = np.full((NUM_LANDMARKS, 3), np.nan, np.float32)
    with DrivingVideo(path) as video, LandmarkTracker(smooth=False) as tracker:
        for i, frame in enumerate(video):
            pts = tracker.track(frame, i / video.fps)
            frames.append(nan if pts is None else pts)
        return np.stack(frames), video.fps, video.size


def load_clip_landmarks(cache_dir: Path, row: ManifestRow) -> ClipLandmarks:
    """The cached landmarks of one clip. Raises EnlivenError when the clip is not cached yet."""
    path = cache_file(cache_dir, row)
    try:
        with np.load(path, allow_pickle=False) as z:
            return ClipLandmarks(row, z["points"], float(z["fps"]), (int(z["size"][0]), int(z["size"][1])))
    except FileNotFoundError as e:
        raise EnlivenError(f"{row.file} has no landmark cache in {cache_dir}: run the cache stage first") from e


def build_landmark_cache(data_dir: Path, cache_dir: Path, splits: tuple[str, ...] = SPLITS,
                         progress: bool = True) -> list[ClipLandmarks]:
    """Make (or complete) the landmark cache of every clip of ``splits``; returns all of them.

    Clips whose cache file exists and matches the clip's size and mtime are skipped.
    """
    from tqdm import tqdm

    rows = [r for s in splits for r in read_manifest(data_dir, "clip", s)]
    out = []
    bar = tqdm(rows, desc="landmarks", unit="clip", disable=not progress)
    for row in bar:
        clip = Path(data_dir) / row.file
        dest = cache_file(cache_dir, row)
        key = _source_key(clip)
        if dest.exists():
            with np.load(dest, allow_pickle=False) as z:
                if str(z["key"]) == key:
                    out.append(load_clip_landmarks(cache_dir, row))
                    continue
        bar.set_postfix_str(Path(row.file).stem[:24])
        points, fps, size = track_clip(clip)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.parent / f"{dest.stem}.{os.getpid()}.tmp.npz"  # per process: two runs may build it at once
        np.savez_compressed(tmp, points=points, fps=np.float64(fps), size=np.array(size), key=np.array(key))
        os.replace(tmp, dest)
        found = np.isfinite(points[:, 0, 0]).mean()
        log.info("%s: %d frames, face in %.0f%%", row.file, len(points), 100 * found)
        out.append(ClipLandmarks(row, points, fps, size))
    return out


if __name__ == "__main__":
    import argparse

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    p = argparse.ArgumentParser(description="Build the landmark cache of the data set's clips.")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR)
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE_DIR)
    p.add_argument("--splits", nargs="+", default=list(SPLITS))
    a = p.parse_args()
    build_landmark_cache(a.data, a.cache, tuple(a.splits))
