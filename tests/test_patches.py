"""Eye and mouth patch refiners: alignment, seamless paste, export equivalence, training."""
import numpy as np
import pytest
import torch

from enliven.engine import topology as topo
from enliven.engine.canonical import load_canonical
from enliven.engine.patches import (
    PATCH_KINDS,
    extract,
    needs_patch,
    paste_delta,
    patch_gate,
    patch_inputs,
    patch_transform,
)
from enliven.engine.procedural import blink, builtin_center_px, jaw_open, pose_shape
from enliven.models.generator import create_generator


def _face(shape=None, yaw=10.0, roll=12.0):
    shape = load_canonical().points if shape is None else shape
    return pose_shape(shape, yaw, 5.0, roll, builtin_center_px(512), 0.18 * 512)


@pytest.mark.parametrize("kind", PATCH_KINDS)
def test_patch_alignment_round_trip_within_half_a_pixel(kind):
    """A dot drawn at a landmark is found in the patch where the transform says, and maps back within 0.5 px."""
    pts = _face()
    idx = {"right_eye": topo.RIGHT_EYE[4], "left_eye": topo.LEFT_EYE[12], "mouth": topo.LIPS_OUTER[7]}[kind]
    p = pts[idx, :2]
    yy, xx = np.mgrid[0:512, 0:512]
    image = (255 * np.exp(-((xx - p[0]) ** 2 + (yy - p[1]) ** 2) / (2 * 3.0 ** 2)))
    image = np.repeat(image[..., None], 3, -1).astype(np.float32)
    t = patch_transform(pts, kind, 96)
    patch = extract(image, t)[..., 0].astype(np.float64)
    v, u = np.mgrid[0:96, 0:96]
    found = np.array([(u * patch).sum(), (v * patch).sum()]) / patch.sum()
    assert np.abs(found - t.to_patch(p)).max() < 0.5
    assert np.abs(t.to_crop(found) - p).max() < 0.5
    assert np.abs(t.to_crop(t.to_patch(pts)) - pts[:, :2]).max() < 1e-9


def test_patch_is_upright_and_frames_its_region():
    pts = _face(roll=20.0)
    for kind, region in (("right_eye", topo.RIGHT_EYE), ("left_eye", topo.LEFT_EYE), ("mouth", topo.LIPS_OUTER)):
        q = patch_transform(pts, kind, 64).to_patch(pts[region])
        assert q.min() > 4 and q.max() < 60  # inside, with a margin for the gate
        corners = {"right_eye": (33, 133), "left_eye": (362, 263), "mouth": (61, 291)}[kind]
        a, b = patch_transform(pts, kind, 64).to_patch(pts[list(corners)])
        assert abs(a[1] - b[1]) < 1e-6 and b[0] > a[0]  # the corner line is horizontal in the patch


def test_no_step_at_the_patch_border_on_a_constant_image():
    crop = np.full((512, 512, 3), 100, np.uint8)
    pts = _face()
    t = patch_transform(pts, "mouth", 96)
    delta = np.full((96, 96, 3), 0.2, np.float32) * patch_gate(96)[..., None]
    out = paste_delta(crop, delta, t).astype(np.float64)
    assert out.max() > 140  # the delta is there inside
    border = t.to_crop(np.array([[u, v] for u in (0.0, 95.0) for v in np.linspace(0, 95, 20)]
                                + [[u, v] for v in (0.0, 95.0) for u in np.linspace(0, 95, 20)]))
    xy = np.round(border).astype(int)
    assert np.abs(out[xy[:, 1], xy[:, 0]] - 100).max() <= 1  # untouched at the patch's border
    # the delta (0.2 = 51 levels) fades in over ~6 px: no pixel-to-pixel jump near the full step
    assert max(np.abs(np.diff(out[..., 0], axis=0)).max(), np.abs(np.diff(out[..., 0], axis=1)).max()) <= 51 / 4
    gate = patch_gate(96)
    assert gate[0].max() == 0 and gate[:, 0].max() == 0 and gate[48, 48] == 1


def test_patches_run_only_when_needed():
    base = load_canonical().points
    src = _face(base)
    assert not any(needs_patch(k, src, src) for k in PATCH_KINDS)
    assert needs_patch("right_eye", _face(blink(base, 0.8)), src) and needs_patch("left_eye", _face(blink(base, 0.8)), src)
    assert needs_patch("mouth", _face(jaw_open(base, 1.0)), src) and not needs_patch("mouth", _face(blink(base, 1)), src)


def test_patch_inputs_shapes(astronaut):
    pts = _face()
    crop = np.zeros((512, 512, 3), np.uint8)
    inp = patch_inputs(crop, pts, crop, pts, "left_eye", 64)
    assert inp.warped.shape == inp.source.shape == inp.drawing.shape == (64, 64, 3) and inp.gate.shape == (64, 64)
    assert inp.drawing.max() > 0  # the lids are drawn


def test_patch_refiner_export_matches_torch(tmp_path):
    from enliven.export.patches import compare_patch_refiner, export_patch_refiner

    torch.manual_seed(0)
    model = create_generator("patch16-test")
    for p in model.parameters():  # a trained-looking model, not the near-zero init
        p.data.normal_(0, 0.2)
    path = export_patch_refiner(model, tmp_path / "patch.onnx")
    worst = compare_patch_refiner(model, path)
    assert worst["delta"] < 1e-4 and worst["mask"] < 1e-4


def test_a_training_step_lowers_the_loss(tmp_path):
    from enliven.train.patch_train import PatchTrainer, synthetic_patch_batch

    trainer = PatchTrainer("patch16-test", lr=3e-3, seed=0)
    batch = synthetic_patch_batch(16, 8, seed=0)
    first = trainer.loss(batch).item()
    for _ in range(20):
        trainer.step(batch)
    assert trainer.loss(batch).item() < 0.7 * first
    trainer.save(tmp_path / "ckpt.pt")
    again = PatchTrainer("patch16-test", lr=3e-3, seed=1)
    again.load(tmp_path / "ckpt.pt")
    assert again.step_count == trainer.step_count
    assert abs(again.loss(batch).item() - trainer.loss(batch).item()) < 1e-6


def test_animator_runs_patches_only_where_needed(astronaut, tmp_path):
    """With an (untrained, randomised) eye patch refiner the output changes around closing eyes only."""
    from enliven.animation.animator import Animator, AnimatorConfig
    from enliven.models.generator import save_weights

    torch.manual_seed(0)
    model = create_generator("patch16-test")
    for p in model.parameters():
        p.data.normal_(0, 0.3)
    save_weights(model, tmp_path / "eye.pt", "patch16-test")
    with pytest.raises(ValueError, match="trained engine"):
        AnimatorConfig(engine="analytic", eye_patch_weights=str(tmp_path / "eye.pt"))
    base = load_canonical().points
    drive = lambda shape: pose_shape(shape, 0, 0, 0, builtin_center_px(512), 0.18 * 512).astype(np.float32)
    outs = {}
    for name, weights in (("plain", None), ("patched", str(tmp_path / "eye.pt"))):
        cfg = AnimatorConfig(crop_size_px=512, output="crop", engine="trained", eye_patch_weights=weights)
        with Animator(cfg) as anim:
            anim.prepare(astronaut)
            open_ = [anim.step_landmarks(drive(base), t=i / 30) for i in range(31)][-1]
            shut = anim.step_landmarks(drive(blink(base, 0.9)), t=1.1)
            outs[name] = (open_, shut, anim.last.driven_points)
    assert np.array_equal(outs["plain"][0], outs["patched"][0])  # open eyes: no patch runs
    diff = np.abs(outs["plain"][1].astype(int) - outs["patched"][1]).max(-1)
    assert diff.max() > 0
    ys, _ = np.nonzero(diff)
    eyes = outs["plain"][2][np.concatenate([topo.RIGHT_EYE, topo.LEFT_EYE]), :2]
    assert ys.min() > eyes[:, 1].min() - 60 and ys.max() < eyes[:, 1].max() + 60  # only in the eye patches


@pytest.mark.parametrize("lid_slide", [True, False])
def test_shipped_eye_patch_refiner_opens_and_refines(astronaut, lid_slide):
    """The shipped eye patch refiner of each warp loads (sha256, contract), exports and changes a closing eye
    only; the weights of one warp refuse the other."""
    from enliven.animation.animator import Animator, AnimatorConfig
    from enliven.engine.contract import contract_for
    from enliven.engine.errors import ModelFileError
    from enliven.engine.warp import WarpConfig
    from enliven.models.generator import generator_spec, shipped_weights_path
    from enliven.models.patches import load_patch_refiner

    assert generator_spec("patch-eye64").weights == "patch_eye64.pt"
    warp = WarpConfig(lid_slide=lid_slide)
    other = WarpConfig(lid_slide=not lid_slide)
    path = shipped_weights_path("patch-eye64", warp.version)
    assert path != shipped_weights_path("patch-eye64", other.version)
    model = load_patch_refiner(path, contract_for(warp.version))
    assert model.config.side_px == 64
    with pytest.raises(ModelFileError, match="warp_version"):
        load_patch_refiner(path, contract_for(other.version))
    base = load_canonical().points
    drive = lambda shape: pose_shape(shape, 0, 0, 0, builtin_center_px(512), 0.18 * 512).astype(np.float32)
    cfg = AnimatorConfig(crop_size_px=512, output="crop", engine="trained", eye_patch_weights="shipped", warp=warp)
    with Animator(cfg) as anim:
        anim.prepare(astronaut)
        for i in range(31):
            anim.step_landmarks(drive(base), t=i / 30)
        shut = anim.step_landmarks(drive(blink(base, 0.9)), t=1.1)
    with Animator(AnimatorConfig(crop_size_px=512, output="crop", engine="trained", warp=warp,
                                 eye_patch_weights=None)) as anim:
        anim.prepare(astronaut)
        for i in range(31):
            anim.step_landmarks(drive(base), t=i / 30)
        plain = anim.step_landmarks(drive(blink(base, 0.9)), t=1.1)
    assert np.abs(shut.astype(int) - plain).max() > 10


def test_the_eye_patch_is_on_by_default_where_it_applies(tmp_path):
    """"auto" (the default) runs the shipped eye patch in the trained engine with the shipped face refiner, at
    256 and 512, on either warp, and nowhere else; an explicit patch outside the trained engine is refused."""
    from dataclasses import replace

    from enliven.animation.animator import AnimatorConfig
    from enliven.engine.warp import WarpConfig

    on = AnimatorConfig(crop_size_px=512, engine="trained")
    assert on.eye_patch_weights == "auto" and on.eye_patch == "shipped"
    assert replace(on, crop_size_px=256).eye_patch == "shipped"
    assert AnimatorConfig(engine="trained", warp=WarpConfig(lid_slide=False)).eye_patch == "shipped"
    assert AnimatorConfig(crop_size_px=512, engine="analytic").eye_patch is None
    assert replace(on, engine="analytic").eye_patch is None
    assert AnimatorConfig(engine="trained", generator_weights=str(tmp_path / "w.pt")).eye_patch is None
    assert AnimatorConfig(engine="trained", eye_patch_weights=None).eye_patch is None
    with pytest.raises(ValueError, match="trained engine"):
        AnimatorConfig(engine="analytic", eye_patch_weights="shipped")

def _open_shipped_eye_patch(cache: str) -> int:
    import os

    os.environ["ENLIVEN_CACHE"] = cache
    from enliven.export.patches import open_patch_runner

    return open_patch_runner("shipped", None, threads=1).eye_px


def test_processes_exporting_the_eye_patch_together_get_a_whole_graph(tmp_path):
    """Two processes opening the eye patch refiner on an empty model cache (a server's workers warming up) both
    get a working runner; one checked graph is left, no half-written file and no temporary folder."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(2) as pool:
        assert pool.map(_open_shipped_eye_patch, [str(tmp_path)] * 2) == [64, 64]
    folders = [p for p in tmp_path.rglob("*") if p.is_dir() and p.name.startswith("patch-")]
    assert len(folders) == 1 and sorted(p.name for p in folders[0].iterdir()) == ["patch.json", "patch.onnx"]
    assert not [p for p in tmp_path.rglob(".patch-*")]


def test_server_warm_up_exports_the_eye_patch(tmp_path, monkeypatch, astronaut):
    """The server's warm-up (a trained session on the built-in photo) leaves the face refiner's and the eye
    patch's graphs in the model cache: the first session does not wait for their export."""
    from enliven.server.session_animator import warm_up

    monkeypatch.setenv("ENLIVEN_CACHE", str(tmp_path))
    warm_up(astronaut, ["trained"])
    assert len(list(tmp_path.rglob("patch-*/patch.onnx"))) == 1
    assert len(list(tmp_path.rglob("refiner128-*/refiner.decoder.onnx"))) == 1


def test_cached_graphs_open_without_torch(tmp_path):
    """Once exported, the face refiner's and the eye patch's graphs open from the model cache without importing
    torch (each of a server's workers stays ~190 MB smaller); the weights of the other warp are still refused."""
    import os
    import subprocess
    import sys

    code = ("import sys\n"
            "from enliven.export.patches import open_patch_runner\n"
            "from enliven.export.runner import open_runner\n"
            "from enliven.engine.contract import contract_for\n"
            "from enliven.engine.errors import ModelFileError\n"
            "from enliven.models.shipped import shipped_file\n"
            "r = open_patch_runner('shipped', None, threads=1)\n"
            "g = open_runner(precision='int8', threads=1)\n"
            "torch_used = 'torch' in sys.modules\n"
            "try:\n"
            "    open_patch_runner(str(shipped_file('patch-eye64')), None, 1, contract_for(4))\n"
            "    refused = False\n"
            "except ModelFileError:\n"
            "    refused = True\n"
            "print(r.eye_px, g.resolution_px, refused, torch_used)\n")
    env = {**os.environ, "ENLIVEN_CACHE": str(tmp_path), "GLOG_minloglevel": "2"}
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
            for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr + runs[1].stderr
    assert runs[0].stdout.split() == ["64", "128", "True", "True"]  # the first exports (torch)
    assert runs[1].stdout.split() == ["64", "128", "True", "False"]  # the second opens the cache without torch
    folder = next(tmp_path.rglob("patch-*/patch.json")).parent
    assert sorted(p.name for p in folder.iterdir()) == ["patch.json", "patch.onnx"]
