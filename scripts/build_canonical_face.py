"""Build enliven's canonical face: a mean, neutral, frontal, left/right-symmetric 478-point shape.

The mediapipe 0.10.21 wheel ships no canonical face model, so we average real neutral faces:

1. Landmarks: MediaPipe FaceMesh (refine_landmarks=True, tracking mode) on every
   ``--stride``-th frame of each clip whose MANIFEST.tsv row has ``split == train``
   (never ``val``), at most ``--max-frames-per-clip`` frames a clip. Points in pixels,
   z = MediaPipe z * image width.
2. A first mean: generalised Procrustes analysis (GPA, 3-D similarity) of the roughly
   neutral frames, turned to the average camera view and made symmetric.
3. Selection of near-frontal, neutral frames against that mean: mouth closed, both eyes
   open, small yaw/pitch/roll, and a small non-rigid residual (no smile, frown or raised
   brows); at most ``--max-frames-per-person`` frames a person.
4. The final mean: GPA of the selected frames, each person weighted equally, turned to the
   average camera view of those frames, then made exactly symmetric (mirror permutation of
   the 478 points by nearest neighbour of the reflected shape, averaged with its mirror
   image) and normalised: origin at the mean of topology.RIGID, x right, y down, z away
   from the camera, interocular distance 1, eye line along x, midline plane x = 0.

Writes ``enliven/engine/assets/canonical_face.npz`` (``points`` (478, 3) float32,
``mirror`` (478,) int16) and the data card ``canonical_face.md`` next to it. No image
data is stored: only the 478 x 3 mean shape and the permutation.

Usage: .venv/bin/python scripts/build_canonical_face.py [--data ../shared/data] [--jobs 2]
About a minute on 2 CPU cores with the defaults (FaceMesh on ~18k frames).
"""
from __future__ import annotations

import argparse
import csv
import datetime
import logging
import multiprocessing
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from enliven.engine import topology  # noqa: E402
from enliven.engine.canonical import angles_from_rotation  # noqa: E402

log = logging.getLogger("build_canonical_face")

ASSETS = ROOT / "enliven" / "engine" / "assets"

# Selection thresholds (see the data card).
MOUTH_CLOSED_MAX = 0.04  # topology.mouth_opening: inner-lip gap / interocular distance
EYES_OPEN_MIN_RATIO = 0.8  # each eye's opening >= this x the person's median eye opening
POSE_MAX_DEG = 10.0  # |yaw| and |pitch| relative to the first (average-view) mean
ROLL_MAX_DEG = 20.0  # |roll|: in-plane, so it hardly changes what MediaPipe sees
RESIDUAL_QUANTILE = 0.5  # keep each person's frames with the smaller non-rigid residual


@dataclass(frozen=True)
class Clip:
    file: str  # path relative to the data folder
    person_id: str
    frames: int  # frame count from the manifest


def read_train_clips(data_dir: Path) -> list[Clip]:
    """Rows of MANIFEST.tsv that are clips of the train split (val rows are never read further)."""
    with open(data_dir / "MANIFEST.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [Clip(r["file"], r["person_id"], int(r["frames"]))
            for r in rows if r["kind"] == "clip" and r["split"] == "train"]


def extract_clip(args: tuple[str, int, int]) -> tuple[np.ndarray, int]:
    """FaceMesh landmarks of every ``stride``-th frame of one clip, at most ``cap`` frames.

    Returns ((N, 478, 3) float32 pixels, number of frames sent to FaceMesh).
    """
    import cv2
    import mediapipe as mp

    path, stride, cap = args
    video = cv2.VideoCapture(path)
    out: list[np.ndarray] = []
    tried = 0
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=True,
                                         min_detection_confidence=0.5, min_tracking_confidence=0.5) as mesh:
        index = 0
        while tried < cap:
            if not video.grab():
                break
            if index % stride == 0:
                ok, bgr = video.retrieve()
                if not ok:
                    break
                tried += 1
                h, w = bgr.shape[:2]
                result = mesh.process(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                if result.multi_face_landmarks:
                    lm = result.multi_face_landmarks[0].landmark
                    pts = np.array([(p.x * w, p.y * h, p.z * w) for p in lm], dtype=np.float32)
                    if pts.shape == (topology.NUM_LANDMARKS, 3):
                        out.append(pts)
            index += 1
    video.release()
    shape = (len(out), topology.NUM_LANDMARKS, 3)
    return (np.stack(out) if out else np.zeros(shape, np.float32)), tried


# ----------------------------------------------------------------------------- geometry


def similarity_fit(src: np.ndarray, dst: np.ndarray, *, scale: bool = True
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batched Umeyama: R, s, t with dst ~ s * src @ R.T + t (proper rotations only).

    Args: src, dst (N, K, 3) or (K, 3). Returns R (N, 3, 3), s (N,), t (N, 3).
    """
    src = np.asarray(src, np.float64).reshape(-1, *np.shape(src)[-2:])
    dst = np.asarray(dst, np.float64).reshape(-1, *np.shape(dst)[-2:])
    mu_s, mu_d = src.mean(axis=1), dst.mean(axis=1)
    a, b = src - mu_s[:, None], dst - mu_d[:, None]
    cov = np.einsum("nki,nkj->nij", b, a) / a.shape[1]
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones((len(cov), 3))
    d[:, 2] = np.sign(np.linalg.det(u @ vt))
    rot = u @ (d[:, :, None] * vt)
    var_s = (a ** 2).sum(axis=(1, 2)) / a.shape[1]
    s = (sig * d).sum(axis=1) / var_s if scale else np.ones(len(cov))
    t = mu_d - s[:, None] * np.einsum("nij,nj->ni", rot, mu_s)
    return rot, s, t


def apply_similarity(points: np.ndarray, rot: np.ndarray, s: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(N, K, 3) points -> s * p @ R.T + t, batched."""
    return s[:, None, None] * np.einsum("nij,nkj->nki", rot, points) + t[:, None]


def normalise_size(shape: np.ndarray) -> np.ndarray:
    """Centre a (K, 3) shape and scale it to unit root-mean-square radius."""
    c = shape - shape.mean(axis=0)
    return c / np.sqrt((c ** 2).sum(axis=1).mean())


def gpa(frames: np.ndarray, weights: np.ndarray, *, iterations: int = 50, tol: float = 1e-9) -> np.ndarray:
    """Generalised Procrustes mean of (N, K, 3) shapes with per-shape weights (3-D similarity).

    Returns the (K, 3) mean, centred with unit RMS radius, in the orientation of the
    weighted-first frame's frame of reference (turn it to a view afterwards).
    """
    w = weights / weights.sum()
    mean = normalise_size(frames[int(np.argmax(w))].astype(np.float64))
    for _ in range(iterations):
        rot, s, t = similarity_fit(frames, np.broadcast_to(mean, frames.shape))
        aligned = apply_similarity(frames.astype(np.float64), rot, s, t)
        new = normalise_size(np.einsum("n,nkd->kd", w, aligned))
        r, _, _ = similarity_fit(new, mean, scale=False)  # keep the orientation from drifting
        new = new @ r[0].T
        change = float(np.abs(new - mean).max())
        mean = new
        if change < tol:
            break
    return mean


def average_view(mean: np.ndarray, frames: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Turn ``mean`` into the average orientation it has in the (image-coordinate) frames.

    The chordal mean of the per-frame rotations mean -> frame, projected back onto SO(3).
    """
    rot, _, _ = similarity_fit(np.broadcast_to(mean, frames.shape), frames)
    m = np.einsum("n,nij->ij", weights / weights.sum(), rot)
    u, _, vt = np.linalg.svd(m)
    r = u @ np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))]) @ vt
    return mean @ r.T


def mirror_permutation(shape: np.ndarray) -> np.ndarray:
    """Nearest neighbour of each point of the x-reflected shape (shape symmetric about x = 0)."""
    reflected = shape * np.array([-1.0, 1.0, 1.0])
    d = ((shape[:, None, :] - reflected[None, :, :]) ** 2).sum(axis=2)
    return np.argmin(d, axis=0)  # mirror[i] = the point nearest to the reflection of point i


def _rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Smallest rotation taking unit vector a onto unit vector b (Rodrigues)."""
    v = np.cross(a, b)
    c = float(np.dot(a, b))
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1.0 + c)


def symmetrise(shape: np.ndarray, *, iterations: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Find the symmetry plane and mirror permutation, and average the shape with its mirror.

    The plane is turned onto x = 0 by the smallest rotation (it corrects yaw and roll only,
    pitch is kept). Returns the symmetric shape (K, 3) and ``mirror`` (K,) int.
    Raises RuntimeError if the permutation is not an involution.
    """
    p = shape - shape.mean(axis=0)
    mirror = mirror_permutation(p)
    for _ in range(iterations):
        pairs = np.flatnonzero(mirror != np.arange(len(p)))
        diff = p[pairs] - p[mirror[pairs]]
        diff *= np.where(diff[:, :1] < 0, -1.0, 1.0)  # orient every pair difference towards +x
        normal = np.linalg.svd(diff, full_matrices=False)[2][0]
        normal *= np.sign(normal[0])
        offset = float(np.mean((p + p[mirror]) / 2 @ normal))
        p = (p - offset * normal) @ _rotation_between(normal, np.array([1.0, 0.0, 0.0])).T
        new = mirror_permutation(p)
        if np.array_equal(new, mirror):
            break
        mirror = new
    if not np.array_equal(mirror[mirror], np.arange(len(p))):
        bad = np.flatnonzero(mirror[mirror] != np.arange(len(p)))
        raise RuntimeError(f"mirror permutation is not an involution at {bad.tolist()}")
    sym = 0.5 * (p + p[mirror] * np.array([-1.0, 1.0, 1.0]))
    return sym, mirror


def normalise_canonical(shape: np.ndarray) -> np.ndarray:
    """Origin at the mean of the RIGID points, interocular distance exactly 1."""
    out = shape - shape[topology.RIGID].mean(axis=0)
    return out / topology.interocular_distance(out)


def frame_measures(frames: np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame mouth opening and eye openings (normalised by the interocular distance)."""
    mouth = np.array([topology.mouth_opening(f) for f in frames])
    eyes = np.array([topology.eye_opening(f) for f in frames])
    return {"mouth": mouth, "eye_r": eyes[:, 0], "eye_l": eyes[:, 1]}


def make_frontal_mean(frames: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """GPA mean -> average camera view -> symmetric, normalised canonical shape and mirror."""
    mean = gpa(frames, weights)
    viewed = average_view(mean, frames, weights)
    sym, mirror = symmetrise(viewed)
    return normalise_canonical(sym), mirror


def pose_and_residual(frames: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Yaw/pitch/roll (deg) of each frame relative to ``reference`` (RIGID fit), and the
    non-rigid residual: RMS distance over all points after a full similarity fit, in
    interocular distances (the reference has interocular distance 1)."""
    rig = topology.RIGID
    rot, _, _ = similarity_fit(np.broadcast_to(reference[rig], (len(frames), len(rig), 3)), frames[:, rig])
    angles = np.array([angles_from_rotation(r) for r in rot])
    r2, s2, t2 = similarity_fit(frames, np.broadcast_to(reference, frames.shape))
    aligned = apply_similarity(frames.astype(np.float64), r2, s2, t2)
    residual = np.sqrt(((aligned - reference) ** 2).sum(axis=2).mean(axis=1))
    return angles, residual


def person_weights(person: np.ndarray) -> np.ndarray:
    """1 / (frames of that person): every person counts the same in the mean."""
    _, inverse, counts = np.unique(person, return_inverse=True, return_counts=True)
    return 1.0 / counts[inverse]


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=ASSETS / "canonical_face.npz")
    parser.add_argument("--stride", type=int, default=2, help="use every n-th frame")
    parser.add_argument("--max-frames-per-clip", type=int, default=600)
    parser.add_argument("--max-frames-per-person", type=int, default=150)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--landmark-cache", type=Path, default=None,
                        help="npz to reuse extracted landmarks from (written if missing; keep it outside the repo)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    t0 = time.time()

    clips = read_train_clips(args.data)
    log.info("train clips: %d, people: %d, frames: %d", len(clips), len({c.person_id for c in clips}),
             sum(c.frames for c in clips))

    if args.landmark_cache is not None and args.landmark_cache.exists():
        cache = np.load(args.landmark_cache, allow_pickle=False)
        frames, clip_of, tried = cache["frames"], cache["clip_of"], int(cache["tried"])
        if [str(f) for f in cache["files"]] != [c.file for c in clips]:
            raise SystemExit(f"{args.landmark_cache} was made from other clips; delete it")
    else:
        jobs = [(str(args.data / c.file), args.stride, args.max_frames_per_clip) for c in clips]
        with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
            results = pool.map(extract_clip, jobs, chunksize=1)
        frames = np.concatenate([r[0] for r in results])
        clip_of = np.concatenate([np.full(len(r[0]), i) for i, r in enumerate(results)])
        tried = sum(r[1] for r in results)
        if args.landmark_cache is not None:
            np.savez_compressed(args.landmark_cache, frames=frames, clip_of=clip_of, tried=tried,
                                files=np.array([c.file for c in clips]))
    log.info("landmarks: %d of %d sampled frames had a face (%.0f s)", len(frames), tried, time.time() - t0)

    person = np.array([clips[i].person_id for i in clip_of])
    m = frame_measures(frames)
    eye_median = {p: np.median(np.minimum(m["eye_r"], m["eye_l"])[person == p]) for p in np.unique(person)}
    eye_ref = np.array([eye_median[p] for p in person])
    eyes_open = (m["eye_r"] >= EYES_OPEN_MIN_RATIO * eye_ref) & (m["eye_l"] >= EYES_OPEN_MIN_RATIO * eye_ref)
    neutral = (m["mouth"] <= MOUTH_CLOSED_MAX) & eyes_open
    log.info("mouth closed and eyes open: %d frames", int(neutral.sum()))

    # Pass 1: a first frontal mean from all roughly neutral frames.
    first, _ = make_frontal_mean(frames[neutral], person_weights(person[neutral]))

    # Pass 2: pose and expression against it.
    angles, residual = pose_and_residual(frames, first)
    frontal = (np.abs(angles[:, :2]) <= POSE_MAX_DEG).all(axis=1) & (np.abs(angles[:, 2]) <= ROLL_MAX_DEG)
    keep = neutral & frontal
    log.info("... and |yaw|, |pitch| <= %.0f deg, |roll| <= %.0f deg: %d frames", POSE_MAX_DEG, ROLL_MAX_DEG,
             int(keep.sum()))
    rng = np.random.default_rng(args.seed)
    chosen: list[np.ndarray] = []
    for p in np.unique(person[keep]):
        idx = np.flatnonzero(keep & (person == p))
        idx = idx[residual[idx] <= np.quantile(residual[idx], RESIDUAL_QUANTILE)]
        if len(idx) > args.max_frames_per_person:
            idx = np.sort(rng.choice(idx, args.max_frames_per_person, replace=False))
        chosen.append(idx)
    sel = np.concatenate(chosen)
    sel_people = np.unique(person[sel])
    sel_clips = np.unique(clip_of[sel])
    log.info("selected: %d frames of %d people from %d clips", len(sel), len(sel_people), len(sel_clips))

    canonical, mirror = make_frontal_mean(frames[sel], person_weights(person[sel]))

    # Checks.
    flip = np.array([-1.0, 1.0, 1.0])
    asym = float(np.abs(canonical[mirror] * flip - canonical).max())
    midline = np.flatnonzero(mirror == np.arange(len(mirror)))
    assert asym < 1e-9, asym
    assert np.array_equal(mirror[mirror], np.arange(len(mirror)))
    assert mirror[468] == 473 and set(mirror[topology.RIGHT_IRIS]) == set(topology.LEFT_IRIS)
    rigid_set = set(topology.RIGID.tolist())
    if set(mirror[topology.RIGID].tolist()) != rigid_set:
        log.warning("topology.RIGID is not mirror-closed: origin is off the midline")
    forward = canonical[topology.NOSE_TIP, 2] < canonical[topology.RIGID, 2].mean()
    assert forward, "nose tip should be closer to the camera (smaller z) than the rigid mean"
    residual_sel = residual[sel]
    chin_forehead = canonical[topology.CHIN] - canonical[topology.FOREHEAD]
    tilt = float(np.degrees(np.arctan2(-chin_forehead[2], chin_forehead[1])))
    side = "closer to" if tilt > 0 else "further from"
    lean = f"{abs(tilt):.1f} deg out of the image plane, the chin {side} the camera"
    log.info("midline points: %d; forehead->chin line: %s", len(midline), lean)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, points=canonical.astype(np.float32), mirror=mirror.astype(np.int16))
    card = args.out.with_suffix(".md")
    card.write_text(DATA_CARD.format(
        date=datetime.date.today().isoformat(),
        n_clips=len(clips), n_people=len({c.person_id for c in clips}), n_frames=sum(c.frames for c in clips),
        stride=args.stride, cap_clip=args.max_frames_per_clip, tried=tried, found=len(frames),
        n_neutral=int(neutral.sum()), n_frontal=int(keep.sum()),
        n_sel=len(sel), n_sel_people=len(sel_people), n_sel_clips=len(sel_clips),
        cap_person=args.max_frames_per_person, mouth_max=MOUTH_CLOSED_MAX, eye_ratio=EYES_OPEN_MIN_RATIO,
        pose_max=POSE_MAX_DEG, roll_max=ROLL_MAX_DEG, res_q=RESIDUAL_QUANTILE,
        res_med=float(np.median(residual_sel)), n_midline=len(midline), lean=lean,
        seed=args.seed, script=Path(__file__).relative_to(ROOT).as_posix(),
    ))
    log.info("wrote %s and %s (%.0f s)", args.out, card, time.time() - t0)
    return 0


DATA_CARD = """\
# Canonical face: data card

`canonical_face.npz` holds enliven's canonical face: `points`, a (478, 3) float32 mean shape
in MediaPipe FaceMesh order (468 mesh points + 10 iris points), and `mirror`, a (478,) int16
permutation (point i's left/right mirror image is point `mirror[i]`; midline points map to
themselves). Load it with `enliven.engine.canonical.load_canonical()`.

**No image data is stored**: only the 478 x 3 mean shape and the permutation. Made on {date} by
`{script}` (re-run it to rebuild; about a minute on 2 CPU cores).

## Frame of reference

Origin at the mean of `topology.RIGID`; x to the image right (from the subject's right eye
to their left eye), y down, z away from the camera (MediaPipe's convention: smaller z = closer);
scaled so that `topology.interocular_distance` is exactly 1.0. Exactly symmetric about the
plane x = 0 ({n_midline} midline points have x = 0), so the eye line lies along x. The face looks
along -z; its pitch is the average head pitch of the selected frames relative to their cameras
(talking-head footage, camera roughly at eye level): the forehead (10) -> chin (152) line
is tilted {lean}.

## Data

Only rows of `../shared/data/MANIFEST.tsv` with `kind == clip` and `split == train` (never `val`):
{n_clips} clips of {n_people} people, {n_frames} frames in all. Research-licensed footage, used
to compute the mean only; none of it is copied into the project.

- Landmarks: MediaPipe 0.10.21 FaceMesh, `refine_landmarks=True`, tracking mode, on one frame
  in {stride}, at most {cap_clip} frames a clip: {tried} frames sampled, {found} with a face.
- Mouth closed (`topology.mouth_opening <= {mouth_max}`) and both eyes open (each eye's
  `topology.eye_opening >= {eye_ratio}` x that person's median): {n_neutral} frames.
- Near-frontal: yaw and pitch within +-{pose_max:.0f} deg and roll within +-{roll_max:.0f} deg of a
  first mean made the same way from all the frames above (rotation fitted on `topology.RIGID`,
  angles as in `enliven.engine.canonical`): {n_frontal} frames.
- Neutral expression: per person, the {res_q:.0%} of those frames with the smallest non-rigid residual
  (RMS distance of all 478 points to the first mean after a similarity fit; median of the kept
  frames {res_med:.3f} interocular distances), then at most {cap_person} frames a person at random
  (seed {seed}).
- **Used: {n_sel} frames of {n_sel_people} people from {n_sel_clips} clips.**

## Method

Generalised Procrustes analysis (3-D similarity alignment of all 478 points, iterated to
convergence), each person weighted equally; the mean is turned to the average camera view of
the frames (chordal mean of the per-frame rotations), its symmetry plane is found (mirror
permutation by nearest neighbour of the x-reflected shape, checked to be an involution; irises
468..472 <-> 473..477) and turned onto x = 0 by the smallest rotation (yaw and roll only), and
the shape is averaged with its mirror image. Then normalised as above.

Known limits: the dataset's people are mostly adults from news, interview and studio footage, with
MEAD actors and a few public figures appearing in several clips (each person weighs the same
regardless); MediaPipe's depth (z) is a learned estimate, not a measurement.
"""

if __name__ == "__main__":
    raise SystemExit(main())
