"""``evaluate`` end to end on a tiny data set made from the built-in photo (the dlib and perceptual
judges, which need the train extra, and the generator are stand-ins; MediaPipe is real)."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from enliven.engine.video_io import VideoWriter
from enliven.evaluate import metrics, run
from enliven.evaluate.config import EvalConfig
from enliven.evaluate.judges import DlibIdentity, Judges, StaticMesh
from enliven.evaluate.report import CROSS_COLUMNS, SELF_COLUMNS, write_report

MANIFEST_HEADER = "\t".join(("file", "kind", "subkind", "source", "source_path", "license", "person_id", "frames",
                             "fps", "width", "height", "split", "notes"))
FRAMES = 8


class FakeIdentity:
    cosine = staticmethod(DlibIdentity.cosine)

    def embed(self, image: np.ndarray, points: np.ndarray) -> np.ndarray:
        return image.reshape(-1, 3).mean(0)


class IdentityRunner:
    """A generator that changes nothing: trained mode must then score exactly as analytic mode."""

    provider = "none"

    def prepare(self, source_crop: np.ndarray) -> None:
        self.source_shape = source_crop.shape

    def refine(self, warped_crop: np.ndarray, driven_points: np.ndarray) -> np.ndarray:
        return warped_crop.copy()


def tiny_data_set(root: Path, photo: np.ndarray, landmarks: np.ndarray) -> Path:
    """Two people (the photo's face, and the face mirrored), one clip each of the face drifting by a pixel a frame."""
    (x0, y0), (x1, y1) = landmarks[:, :2].min(0), landmarks[:, :2].max(0)
    cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0)  # a square twice the face's size
    box = photo[int(max(cy - half, 0)):int(cy + half), int(max(cx - half, 0)):int(cx + half)]
    small = cv2.resize(box, (256, 256), interpolation=cv2.INTER_AREA)
    (root / "clips").mkdir(parents=True)
    rows = [MANIFEST_HEADER]
    for person, image in (("a", small), ("b", np.ascontiguousarray(small[:, ::-1]))):
        with VideoWriter(root / "clips" / f"{person}.mp4", 25, (256, 256)) as writer:
            for i in range(FRAMES):
                shift = np.array([[1, 0, i], [0, 1, i / 2]], np.float32)
                writer.write(cv2.warpAffine(image, shift, (256, 256), borderMode=cv2.BORDER_REFLECT))
        rows.append(f"clips/{person}.mp4\tclip\treal\ttest\t-\tPD\t{person}\t{FRAMES}\t25.0\t256\t256\tval\t-")
    (root / "MANIFEST.tsv").write_text("\n".join(rows) + "\n")
    return root


@pytest.mark.slow
def test_evaluate_end_to_end_writes_the_report_and_grids(tmp_path, astronaut, astronaut_face, monkeypatch) -> None:
    judges = Judges(lambda a, b, mask=None: 2 * metrics.l1_error(a, b, mask), FakeIdentity(),  # type: ignore[arg-type]
                    StaticMesh())
    monkeypatch.setattr(run, "Judges", SimpleNamespace(load=lambda: judges))
    monkeypatch.setattr(run, "open_runner", lambda *args, **kwargs: IdentityRunner())
    monkeypatch.setattr(run, "generator_cost", lambda *args, **kwargs: {})
    data_dir = tiny_data_set(tmp_path / "data", astronaut, astronaut_face.landmarks)
    cfg = EvalConfig(data_dir=str(data_dir), cache_dir=str(tmp_path / "cache"), frames_per_clip=3, flicker_frames=4,
                     cross_pairs=1, grids_dir=str(tmp_path / "grids"))

    report = run.evaluate(cfg, progress=False)

    assert report["frames"] == {"self": 2 * (3 + 1), "cross": 3 + 1, "clips": 2, "cross_pairs": 1}
    own, cross = report["self_reenactment"], report["cross_reenactment"]
    assert own["analytic"] == own["trained"] and cross["analytic"] == cross["trained"]  # the runner changed nothing
    assert {c[0] for c in SELF_COLUMNS} <= own["trained"].keys()
    assert {c[0] for c in CROSS_COLUMNS} <= cross["trained"].keys()
    assert own["trained"]["face_missed"] == 0.0 and own["trained"]["l1_face"] < 0.05
    assert own["trained"]["akd_px"] < 5.0 and cross["trained"]["pose_error_deg"] < 5.0
    assert [c["person"] for c in report["per_clip"]] == ["a", "b"]
    for name in ("self_reenactment_open_mouth.png", "self_reenactment_random.png", "cross_reenactment.png"):
        grid = cv2.imread(str(tmp_path / "grids" / name))
        assert grid is not None and grid.shape[1] == 4 * 256
    assert len(report["grids"]["public"]) == 2  # the built-in photo driven by both clips

    md = write_report(report, tmp_path / "out")
    assert "| trained |" in md.read_text()
    assert json.loads((tmp_path / "out" / "quality.json").read_text())["grids"]["public"] == "public_grid.jpg"
