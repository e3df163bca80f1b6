"""Export of the trained generator: ONNX graphs that pass onnx.checker and match torch, the
first-use cache the runtime relies on, reduced precision, the CLI, and TensorRT where a GPU is."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from enliven.models import generator as gen
from enliven.engine.errors import ModelFileError
from enliven.engine.runtime import OnnxModel, RuntimeConfig
from enliven.export import cache
from enliven.export.samples import real_inputs
from enliven.export.tensorrt_engine import TensorRTUnavailable, build_engine, tensorrt_unavailable_reason
from enliven.export.compare import compare, torch_outputs
from enliven.export.graphs import ExportError
from enliven.export.to_onnx import export_generator


@pytest.fixture(scope="module")
def shipped():
    return gen.load_generator()


@pytest.fixture(scope="module")
def fp32_dynamic(shipped, tmp_path_factory):
    return export_generator(shipped, tmp_path_factory.mktemp("fp32"))


def _batch_dim(path) -> object:
    dim = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0]
    return dim.dim_param or dim.dim_value


def test_fp32_export_passes_the_checker_and_matches_torch_on_random_and_real_inputs(shipped, fp32_dynamic) -> None:
    for path in (fp32_dynamic.encoder, fp32_dynamic.decoder):
        onnx.checker.check_model(str(path), full_check=True)
        assert onnx.load(str(path)).opset_import[0].version >= 17
        assert _batch_dim(path) == "batch"
    diffs = compare(shipped, fp32_dynamic)  # batches 1 and 3, random and real frames
    assert set(diffs) == {"code", "delta", "mask"}
    assert max(diffs.values()) <= 1e-3, diffs


def test_static_batch_graph_has_a_fixed_batch_and_refuses_another(shipped, tmp_path) -> None:
    exported = export_generator(shipped, tmp_path, batch=2)
    assert _batch_dim(exported.decoder) == 2
    assert max(compare(shipped, exported).values()) <= 1e-3
    dec = OnnxModel(exported.decoder, RuntimeConfig(intra_op_threads=1))
    r = exported.resolution_px
    one = {"warped": np.zeros((1, 3, r, r), np.float32), "drawing": np.zeros((1, 3, r, r), np.float32),
           "gate": np.zeros((1, 1, r, r), np.float32), "code": np.zeros((1, 64), np.float32)}
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        dec(**one)


def test_dynamic_batch_gives_each_frame_its_own_photo_code(shipped, fp32_dynamic) -> None:
    """One decoder call for frames of two photos (the server's batching) equals two separate calls."""
    s = real_inputs(fp32_dynamic.resolution_px, frames=2)
    dec = OnnxModel(fp32_dynamic.decoder, RuntimeConfig(intra_op_threads=1))
    codes = np.stack([torch_outputs(shipped, {"source": s.source})["code"][0],
                      torch_outputs(shipped, {"source": s.source[:, :, ::-1].copy()})["code"][0]])
    assert np.abs(codes[0] - codes[1]).max() > 1e-3  # two different photos
    batch = {k: np.concatenate([f[k] for f in s.decoder]) for k in ("warped", "drawing", "gate")}
    together = dec(**batch, code=codes)["delta"]
    for i in range(2):
        alone = dec(**{k: v[i:i + 1] for k, v in batch.items()}, code=codes[i:i + 1])["delta"]
        np.testing.assert_allclose(together[i:i + 1], alone, atol=1e-5)


def test_reduced_precision_graphs_are_valid_and_close(shipped, tmp_path) -> None:
    half = export_generator(shipped, tmp_path / "fp16", precision="fp16")
    onnx.checker.check_model(str(half.decoder), full_check=True)
    assert max(compare(shipped, half, real_frames=4).values()) <= 2e-2
    int8 = export_generator(shipped, tmp_path / "int8", precision="int8")
    onnx.checker.check_model(str(int8.decoder), full_check=True)
    assert int8.decoder.stat().st_size < 0.5 * half.decoder.stat().st_size * 2  # int8 weights: ~1/3 of fp32
    # On real frames the int8 delta stays close to torch's (image units, 1/255 = 0.004).
    s = real_inputs(int8.resolution_px, frames=6)
    code = torch_outputs(shipped, {"source": s.source})["code"]
    dec = OnnxModel(int8.decoder, RuntimeConfig(intra_op_threads=1))
    errs = [np.abs(dec(**f, code=code)["delta"] - torch_outputs(shipped, {**f, "code": code})["delta"]).mean()
            for f in s.decoder]
    assert float(np.mean(errs)) < 0.01, errs


def test_export_rejects_an_old_opset_and_a_bad_batch(shipped, tmp_path) -> None:
    with pytest.raises(ExportError, match="opset"):
        export_generator(shipped, tmp_path, opset=13)
    with pytest.raises(ExportError, match="batch"):
        export_generator(shipped, tmp_path, batch=0)


def test_cache_exports_once_per_weights_file(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("ENLIVEN_CACHE", str(tmp_path))
    first = cache.ensure_exported()
    stamp = first.decoder.stat().st_mtime_ns
    again = cache.ensure_exported()
    assert again.decoder == first.decoder and again.decoder.stat().st_mtime_ns == stamp  # reused, not redone
    meta = json.loads((first.decoder.parent / "export.json").read_text())
    assert max(meta["max_abs_diff_vs_torch"].values()) <= 1e-3
    # Other weights (here: the shipped ones copied and changed by one parameter) get their own graphs.
    model = gen.load_generator()
    with __import__("torch").no_grad():
        model.decoder.head.bias.add_(0.5)
    other = tmp_path / "other.pt"
    gen.save_weights(model, other, "refiner128")
    mine = cache.ensure_exported(other)
    assert mine.decoder.parent != first.decoder.parent
    assert [p.name for p in tmp_path.joinpath("models").iterdir() if p.name.startswith(".")] == []  # no leftovers


def test_cache_reports_missing_or_corrupt_weights(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("ENLIVEN_CACHE", str(tmp_path))
    with pytest.raises(ModelFileError, match="missing"):
        cache.ensure_exported(tmp_path / "absent.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelFileError):
        cache.ensure_exported(bad)


def test_export_command_writes_checked_graphs(tmp_path) -> None:
    env = {**os.environ, "GLOG_minloglevel": "2"}
    run = subprocess.run([sys.executable, "-m", "enliven.cli", "export", "-o", str(tmp_path), "--batch", "1"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "onnx.checker passed" in run.stdout
    exported = json.loads((tmp_path / "export.json").read_text())
    report = exported["fp32"]
    assert report["batch"] == 1 and max(report["max_abs_diff_vs_torch"].values()) <= 1e-3
    patch = exported["eye_patch"]  # the eye patch refiner goes through the same checks
    assert Path(patch["graph"]).is_file() and max(patch["max_abs_diff_vs_torch"].values()) <= 1e-3
    assert "eye patch (fp32, dynamic batch)" in run.stdout
    bad = subprocess.run([sys.executable, "-m", "enliven.cli", "export", "--batch", "zero"], capture_output=True,
                         text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "batch" in bad.stderr


def test_tensorrt_engine_builds_where_a_gpu_is(fp32_dynamic, tmp_path) -> None:
    reason = tensorrt_unavailable_reason()
    if reason is not None:
        with pytest.raises(TensorRTUnavailable, match="cannot build"):
            build_engine(fp32_dynamic.decoder, tmp_path / "dec.engine")
        pytest.skip(f"TensorRT engine build not exercised: {reason}")
    engine = build_engine(fp32_dynamic.decoder, tmp_path / "dec.engine")
    assert engine.stat().st_size > 100_000
