"""The report: Markdown tables, the JSON document and its files, in the committed format."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from enliven.evaluate import report as rp
from enliven.evaluate.config import EvalConfig
from enliven.evaluate.cost import GeneratorInfo
from enliven.evaluate.cross_reenact import CrossFrameMetrics, CrossReenactment
from enliven.evaluate.results import ByMode, MetricRows, Percentiles
from enliven.evaluate.self_reenact import ClipResult, SelfFrameMetrics, SelfReenactment, StageTimings

COMMITTED = Path(__file__).resolve().parents[1] / "benchmarks" / "quality"


def test_markdown_table_bolds_the_better_value() -> None:
    md = rp.markdown_table({"analytic": {"l1_face": 0.05, "ssim_face": 0.8},
                            "trained": {"l1_face": 0.04, "ssim_face": 0.85}},
                           (("l1_face", "L1", "{:.2f}", -1), ("ssim_face", "SSIM", "{:.2f}", 1)))
    assert "| trained | **0.04** | **0.85** |" in md
    assert "| analytic | 0.05 | 0.80 |" in md


def test_write_report_makes_json_markdown_and_grid(tmp_path) -> None:
    row = np.zeros((8, 32, 3), np.uint8)
    report = {
        "generator": {"weights": "shipped", "resolution_px": 128, "gflop_per_frame": 0.9, "params_decoder": 10,
                      "params_encoder": 5},
        "frames": {"self": 2, "clips": 1, "cross": 2, "cross_pairs": 1},
        "self_reenactment": {"analytic": {"l1_face": 0.05}, "trained": {"l1_face": 0.04}},
        "cross_reenactment": {"analytic": {"csim_to_source": 0.9}, "trained": {"csim_to_source": 0.91}},
        "cost_ms": {"warp_ms": {"p50": 5.0, "p95": 6.0}},
        "grids": {"val_people_outside_repo": "/tmp/x", "public": [row, row]},
    }
    md = rp.write_report(report, tmp_path)
    text = md.read_text()
    assert "| trained | **0.0400** |" in text and "public_grid.jpg" in text
    assert json.loads((tmp_path / "quality.json").read_text())["grids"]["public"] == "public_grid.jpg"
    assert (tmp_path / "public_grid.jpg").stat().st_size > 0


def test_write_report_reproduces_the_committed_report_from_its_json(tmp_path) -> None:
    report = json.loads((COMMITTED / "quality.json").read_text())
    report["grids"]["public"] = [np.zeros((8, 32, 3), np.uint8)]
    md = rp.write_report(report, tmp_path)
    assert md.read_text() == (COMMITTED / "report.md").read_text()
    assert (tmp_path / "quality.json").read_text() == (COMMITTED / "quality.json").read_text()


def keys_of(value: Any) -> Any:
    """The nesting of dict keys (in order) of a JSON value; a list by its first item."""
    if isinstance(value, dict):
        return [(k, keys_of(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [keys_of(value[0])] if value else []
    return None


def self_rows(shift: float) -> ByMode[MetricRows[SelfFrameMetrics]]:
    row = SelfFrameMetrics(l1_face=shift, psnr_face=24.0, ssim_face=0.8, perceptual_face=0.1, l1_crop=0.06,
                           psnr_crop=21.0, ssim_crop=0.7, perceptual_crop=0.5, l1_mouth=0.07, psnr_mouth=20.0,
                           face_missed=0.0, akd_px=1.5, expression_error=0.03, csim=0.97)
    return ByMode(MetricRows([row], [0.02]), MetricRows([row, row], [0.01]))


def test_build_report_has_the_committed_layout(tmp_path) -> None:
    clips = [ClipResult("clips/a.mp4", "a", self_rows(0.0)), ClipResult("clips/b.mp4", "b", self_rows(0.1))]
    own = SelfReenactment(clips, StageTimings([8.0, 9.0], [5.0, 6.0]), [], [])
    cross_row = CrossFrameMetrics(face_missed=0.0, pose_error_deg=2.0, expression_error=0.05, csim_to_source=0.98)
    cross = CrossReenactment([ByMode(MetricRows([cross_row], [0.07]), MetricRows([cross_row], [0.06]))], 2, [])
    cost = {f"{kind}_{n}_thread": Percentiles(1.0, 2.0) for n in (1, 2) for kind in ("torch", "onnxruntime_fp32")}
    generator = GeneratorInfo("shipped", "CPUExecutionProvider", "fp32", 0.911, 0.105, 849_000, 485_000, 128)
    report = rp.build_report(EvalConfig(), generator, own, cross, cost, Path.home() / "eval", [])
    assert report["frames"] == {"self": 3 + 3, "cross": 2, "clips": 2, "cross_pairs": 2}
    assert report["grids"]["val_people_outside_repo"] == "~/eval"
    assert report["self_reenactment"]["trained"]["akd_px"] == 1.5
    assert report["per_clip"][1]["analytic"]["l1_face"] == 0.1
    rp.write_report(report, tmp_path)
    committed = json.loads((COMMITTED / "quality.json").read_text())
    for section in ("regions", "behaviour"):  # appended by regions.report_sections after build_report
        committed.pop(section, None)
    assert keys_of(json.loads((tmp_path / "quality.json").read_text())) == keys_of(committed)
