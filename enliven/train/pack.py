"""Pair stores packed small, to train on a machine that has neither the data set nor its landmarks.

A pair store (``dataset.build_pairs``) is a few GB of raw arrays; a GPU machine reached over a
narrow link needs it in tens of MB. The pack keeps what cannot be recomputed and drops the rest:
  images   source (once per source frame), warped and target of each pair as WebP (lossy, quality q)
  valid    a PNG only where the driving frame does not cover the whole crop
  points   driven landmarks' x and y as int16 in 1/32 px, LZMA-compressed (z is 0 after unpacking:
           no training input or loss reads it)
  plan     (N, 4) int32, as in the store (the pair's kind in column 3)
The landmark drawing is redrawn from the points on unpacking (``render.draw_landmarks``, as the
runtime draws it). ``--drivers-per-source`` keeps fewer pairs of every source frame: every source
stays, so the pack loses pairs, not people or photos.

    python -m enliven.train.pack pack STORE PACK.npz [--drivers-per-source 5] [--quality 90]
    python -m enliven.train.pack unpack PACK.npz STORE [--workers 16]
"""
from __future__ import annotations

import argparse
import json
import lzma
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from ..engine.render import draw_landmarks
from .dataset import write_store

POINT_SCALE = 32.0  # landmarks are stored in 1/32 px


def _encode(image: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".webp", np.ascontiguousarray(image[..., ::-1]), [cv2.IMWRITE_WEBP_QUALITY, quality])
    if not ok:
        raise RuntimeError("WebP encoding failed")
    return buf.tobytes()


def _decode(blob: np.ndarray) -> np.ndarray:
    return cv2.imdecode(blob, cv2.IMREAD_COLOR)[..., ::-1]


def choose_pairs(plan: np.ndarray, filled: np.ndarray, drivers_per_source: int, seed: int = 0) -> np.ndarray:
    """Indices of the pairs to keep: up to ``drivers_per_source`` filled pairs of every (clip, source frame).

    plan (N, 4) int32 of the store; filled (N,) bool. Returns sorted indices.
    """
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    groups: dict[tuple[int, int], list[int]] = {}
    for i in np.flatnonzero(filled):
        groups.setdefault((int(plan[i, 0]), int(plan[i, 1])), []).append(int(i))
    for members in groups.values():
        k = min(drivers_per_source, len(members))
        keep.extend(rng.choice(members, size=k, replace=False).tolist())
    return np.array(sorted(keep), np.int64)


def pack(store: Path, dest: Path, drivers_per_source: int = 8, quality: int = 90) -> dict[str, int]:
    """Write the pack of a pair store; returns counts (pairs, sources, bytes)."""
    store = Path(store)
    arrays = {f: np.load(store / f"{f}.npy", mmap_mode="r") for f in ("source", "warped", "target", "valid")}
    points = np.load(store / "driven_points.npy", mmap_mode="r")
    plan = np.load(store / "plan.npy")
    keep = choose_pairs(plan, points[:, 0, 0] != 0, drivers_per_source)
    blobs: list[bytes] = []
    source_of: dict[tuple[int, int], int] = {}
    source_index = np.zeros(len(keep), np.int32)
    for n, i in enumerate(keep):
        key = (int(plan[i, 0]), int(plan[i, 1]))
        if key not in source_of:
            source_of[key] = len(blobs)
            blobs.append(_encode(arrays["source"][i], quality))
        source_index[n] = source_of[key]
    first_pair = len(blobs)
    for i in keep:
        blobs.append(_encode(arrays["warped"][i], quality))
        blobs.append(_encode(arrays["target"][i], quality))
        v = np.asarray(arrays["valid"][i])
        blobs.append(b"" if v.min() == 255 else cv2.imencode(".png", v)[1].tobytes())
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    xy = np.clip(np.round(np.asarray(points[keep])[..., :2] * POINT_SCALE), -32767, 32767).astype(np.int16)
    packed_points = lzma.compress(np.ascontiguousarray(xy.transpose(2, 1, 0)).tobytes())  # runs of one coordinate
    meta = {"net_px": int(arrays["source"].shape[1]), "quality": quality, "first_pair_blob": first_pair,
            "drivers_per_source": drivers_per_source, "store": str(store)}
    dest.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(dest, blobs=np.frombuffer(b"".join(blobs), np.uint8), offsets=offsets,
                        source_index=source_index,
                        points=np.frombuffer(packed_points, np.uint8), plan=plan[keep], meta=np.array(json.dumps(meta)))
    return {"pairs": len(keep), "sources": first_pair, "bytes": dest.stat().st_size}


def _unpack_one(args: tuple[list[np.ndarray], np.ndarray, int]) -> tuple[np.ndarray, ...]:
    (src, warped, target, valid), pts, r = args
    v = np.full((r, r), 255, np.uint8) if valid.size == 0 else cv2.imdecode(valid, cv2.IMREAD_GRAYSCALE)
    return _decode(src), _decode(warped), _decode(target), draw_landmarks(pts, r), v


def unpack(pack_file: Path, store: Path, workers: int = 1) -> int:
    """Write the pair store of a pack (``dataset.write_store`` layout); returns the number of pairs."""
    z = np.load(pack_file)
    meta = json.loads(str(z["meta"]))
    r, blobs, off = meta["net_px"], z["blobs"], z["offsets"]
    first = meta["first_pair_blob"]
    n = len(z["plan"])
    xy = np.frombuffer(lzma.decompress(z["points"].tobytes()), np.int16).reshape(2, -1, n).transpose(2, 1, 0)
    points = np.zeros((n, xy.shape[1], 3), np.float32)
    points[..., :2] = xy / POINT_SCALE

    def blob(k: int) -> np.ndarray:
        return blobs[off[k]:off[k + 1]]

    jobs = [([blob(int(z["source_index"][n])), blob(first + 3 * n), blob(first + 3 * n + 1),
              blob(first + 3 * n + 2)], points[n].astype(np.float64), r) for n in range(len(points))]
    if workers > 1:
        with ProcessPoolExecutor(workers) as ex:
            rows = list(ex.map(_unpack_one, jobs, chunksize=64))
    else:
        rows = [_unpack_one(j) for j in jobs]
    source, warped, target, drawing, valid = (np.stack(c) for c in zip(*rows))
    write_store(Path(store), source, warped, target, drawing, valid, points, z["plan"][:, 3])
    np.save(Path(store) / "plan.npy", z["plan"].astype(np.int32))
    return len(points)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m enliven.train.pack", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="pack a pair store")
    p.add_argument("store", type=Path)
    p.add_argument("dest", type=Path)
    p.add_argument("--drivers-per-source", type=int, default=8)
    p.add_argument("--quality", type=int, default=90, help="WebP quality of the images (1-100)")
    u = sub.add_parser("unpack", help="write the pair store of a pack")
    u.add_argument("pack", type=Path)
    u.add_argument("store", type=Path)
    u.add_argument("--workers", type=int, default=1)
    a = ap.parse_args(argv)
    if a.cmd == "pack":
        print(json.dumps(pack(a.store, a.dest, a.drivers_per_source, a.quality)))
    else:
        print(f"{unpack(a.pack, a.store, a.workers)} pairs in {a.store}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
