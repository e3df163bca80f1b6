"""The learned generator: factory, shapes, bounds, gating, weights files, runtime inputs (export: test_export)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from enliven.models import generator as gen
from enliven.engine import refine
from enliven.engine.runtime import TorchModel
from enliven.engine.canonical import load_canonical
from enliven.engine.errors import ModelFileError


def face_points(size_px: int) -> np.ndarray:
    """A plausible (478, 3) face in an (S, S) crop: the canonical face, eyes ~S/5 apart, centred."""
    pts = load_canonical().points.copy()
    pts *= size_px / 5.0
    pts[:, :2] += [size_px / 2, size_px * 0.55]
    return pts


TEST_NETS = ("refiner32-test", "refiner32s-test")  # the full-resolution top level and the 64 px-style one


def inputs(model: gen.Refiner, n: int = 2, seed: int = 0) -> tuple[torch.Tensor, ...]:
    r = model.config.resolution_px
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, r, r, generator=g), torch.rand(n, 3, r, r, generator=g),
            torch.rand(n, 3, r, r, generator=g), torch.ones(n, 1, r, r))


def test_factory_rejects_unknown_names_and_fields() -> None:
    with pytest.raises(ValueError, match="refiner128"):
        gen.create_generator("no-such-net")
    with pytest.raises(ValueError, match="unknown generator config field"):
        gen.create_generator("refiner32-test", depth=3)
    m = gen.create_generator("refiner32-test", code_dim=4)
    assert m.config.code_dim == 4
    assert "refiner128" in gen.list_generators()


@pytest.mark.parametrize("net", TEST_NETS)
def test_output_shapes_and_ranges(net: str) -> None:
    m = gen.create_generator(net).eval()
    source, warped, drawing, gate = inputs(m)
    with torch.no_grad():
        out = m(source, warped, drawing, gate)
    assert out.delta.shape == (2, 3, 32, 32) and out.mask.shape == (2, 1, 32, 32)
    assert out.delta.dtype == torch.float32
    # the refined image stays inside [0, 1]
    refined = warped + out.delta
    assert refined.min() >= -1e-6 and refined.max() <= 1 + 1e-6


@pytest.mark.parametrize("net", TEST_NETS)
def test_mask_bounds_hold_for_extreme_activations(net: str) -> None:
    m = gen.create_generator(net).eval()
    mask_channels = slice(12, 16) if m.config.top == "shuffle" else slice(3, 4)  # pixel shuffle: 4 per output
    for bias in (-1e4, 1e4):
        with torch.no_grad():
            m.decoder.head.bias[mask_channels] = bias
            out = m(*inputs(m))
        assert float(out.mask.min()) >= gen.MASK_MIN - 1e-6
        assert float(out.mask.max()) <= gen.MASK_MAX + 1e-6


@pytest.mark.parametrize("net", TEST_NETS)
def test_delta_is_zero_outside_the_gate(net: str) -> None:
    m = gen.create_generator(net).eval()
    with torch.no_grad():
        m.decoder.head.weight.normal_(std=0.5)
    source, warped, drawing, gate = inputs(m)
    gate[:, :, :, :16] = 0
    with torch.no_grad():
        out = m(source, warped, drawing, gate)
    assert float(out.delta[..., :16].abs().max()) == 0.0
    assert float(out.delta[..., 16:].abs().max()) > 0.0


@pytest.mark.parametrize("net", TEST_NETS)
def test_encoder_runs_once_and_decoder_reuses_the_code(net: str) -> None:
    m = gen.create_generator(net).eval()
    source, warped, drawing, gate = inputs(m)
    with torch.no_grad():
        code = m.encoder(source)
        split = m.decoder(warped, drawing, gate, code)
        joint = m(source, warped, drawing, gate)
    assert code.shape == (2, m.config.code_dim)
    torch.testing.assert_close(split.delta, joint.delta)


@pytest.mark.parametrize("net", TEST_NETS)
def test_gradients_reach_every_parameter(net: str) -> None:
    m = gen.create_generator(net)
    with torch.no_grad():
        m.decoder.head.weight.normal_(std=0.1)
        for film in m.decoder.films:
            film.linear.weight.normal_(std=0.1)
    out = m(*inputs(m))
    out.delta.square().sum().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


@pytest.mark.parametrize("net", TEST_NETS)
def test_weights_round_trip_and_bad_files(net: str, tmp_path) -> None:
    m = gen.create_generator(net).eval()
    path = tmp_path / "w.pt"
    digest = gen.save_weights(m, path, net, {"step": 3})
    assert digest == gen.sha256_file(path) and len(digest) == 64
    loaded = gen.load_generator(path=path)
    x = inputs(m)
    with torch.no_grad():
        torch.testing.assert_close(loaded(*x).delta, m(*x).delta, atol=2e-3, rtol=0)  # fp16 storage
    with pytest.raises(ModelFileError):
        gen.load_generator(path=tmp_path / "missing.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a model")
    with pytest.raises(ModelFileError):
        gen.load_generator(path=tmp_path / "bad.pt")


def test_shuffle_stem_is_a_3x3_convolution_of_the_inputs_folded_2x2() -> None:
    """The 6x6 stride-2 stem of top="shuffle" computes exactly what a 3x3 convolution (padding 1) of the
    pixel-unshuffled inputs computes: the folded form's kernel written out as a 6x6 one."""
    torch.manual_seed(0)
    folded = torch.nn.Conv2d(4 * 6, 5, 3, 1, 1)
    x = torch.rand(2, 6, 32, 32)
    # unshuffled channel c * 4 + 2 * a + b holds pixel (2i + a, 2j + b) of channel c
    w6 = torch.zeros(5, 6, 6, 6)
    w3 = folded.weight.detach().view(5, 6, 2, 2, 3, 3)
    for a in range(2):
        for b in range(2):
            for ky in range(3):
                for kx in range(3):
                    w6[:, :, 2 * ky + a, 2 * kx + b] = w3[:, :, a, b, ky, kx]
    with torch.no_grad():
        want = folded(torch.nn.functional.pixel_unshuffle(x, 2))
        got = torch.nn.functional.conv2d(x, w6, folded.bias, stride=2, padding=2)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    m = gen.create_generator("refiner32s-test")
    assert m.decoder.stem[0].kernel_size == (6, 6) and m.decoder.stem[0].stride == (2, 2)


def test_flops_and_parameters_of_the_shipped_architecture() -> None:
    m = gen.create_generator("refiner128")
    dec, enc = gen.count_flops(m)
    assert 0.5e9 < dec < 1.3e9  # about 1 GFLOP per frame (2 FLOPs per multiply-add)
    assert enc < 0.3e9
    assert gen.count_params(m) < 2_000_000


def test_scale_points_follows_the_resize_pixel_centres() -> None:
    pts = np.array([[-0.5, -0.5, 2.0], [255.5, 255.5, 4.0], [127.5, 63.5, 0.0]])
    half = refine.scale_points(pts, 0.5)
    np.testing.assert_allclose(half, [[-0.5, -0.5, 1.0], [127.5, 127.5, 2.0], [63.5, 31.5, 0.0]])


def test_refiner_inputs_and_runner() -> None:
    pts = face_points(256)
    crop = np.full((256, 256, 3), 120, np.uint8)
    inp = refine.refiner_inputs(crop, pts, 32)
    assert inp.warped.shape == (32, 32, 3) and inp.drawing.shape == (32, 32, 3)
    assert inp.gate.shape == (32, 32) and 0.0 <= inp.gate.min() and inp.gate.max() <= 1.0
    assert inp.gate[19, 16] > 0.9 and inp.gate[0, 0] == 0.0  # inside the face / a corner
    model = gen.create_generator("refiner32-test")
    runner = refine.GeneratorRunner(TorchModel(model.encoder, refine.ENCODER_INPUTS, refine.ENCODER_OUTPUTS),
                                    TorchModel(model.decoder, refine.DECODER_INPUTS, refine.DECODER_OUTPUTS), 32)
    with pytest.raises(RuntimeError):
        runner.refine(crop, pts)
    runner.prepare(crop)
    out = runner.refine(crop, pts)
    assert out.shape == crop.shape and out.dtype == np.uint8
    with pytest.raises(refine.ShapeError):
        refine.refiner_inputs(crop[:, :100], pts, 32)


# --- in the Animator ------------------------------------------------------------------------------------

def test_animator_config_rejects_unknown_generator_modes() -> None:
    from enliven.animation.animator import AnimatorConfig

    with pytest.raises(ValueError, match="analytic"):
        AnimatorConfig(engine="magic")


def test_animator_trained_mode_changes_only_the_face(astronaut, astronaut_face) -> None:
    from enliven.animation.animator import Animator, AnimatorConfig

    outs = {}
    for mode in ("analytic", "trained"):
        with Animator(AnimatorConfig(output="crop", engine=mode)) as anim:
            anim.prepare(astronaut)
            assert (anim.generator_provider is None) == (mode == "analytic")
            for k in range(3):
                outs[mode] = anim.step_landmarks(astronaut_face.landmarks, t=k / 30)
            driven = anim.last.driven_points
    a, t = outs["analytic"].astype(int), outs["trained"].astype(int)
    assert a.shape == t.shape == (256, 256, 3)
    gate = refine.face_gate(driven, 256)
    # The refiner's own gate is drawn at 128 px and upsampled: allow its feather 4 px beyond this one.
    outside = cv2.dilate((gate > 0).astype(np.uint8), np.ones((9, 9), np.uint8)) == 0
    assert outside.mean() > 0.4
    assert np.abs(a - t)[outside].max() <= 1  # only rounding outside the face
    assert np.abs(a - t)[gate > 0.5].mean() > 0.0


def test_animator_reports_a_missing_weights_file(astronaut, tmp_path) -> None:
    from enliven.animation.animator import Animator, AnimatorConfig

    anim = Animator(AnimatorConfig(generator_weights=str(tmp_path / "none.pt")))
    with pytest.raises(ModelFileError):
        anim.prepare(astronaut)


def test_shipped_weights_load_and_match_their_sha256() -> None:
    spec = gen.generator_spec(gen.DEFAULT_GENERATOR)
    assert spec.weights is not None
    path = gen.WEIGHTS_DIR / spec.weights
    assert path.stat().st_size < 5_000_000  # small enough to commit
    assert (gen.WEIGHTS_DIR / "refiner128.md").exists()  # its data card
    model = gen.load_generator()
    assert model.config.resolution_px == 128 and not model.training


def test_the_distilled_refiner_ships_and_is_cheaper() -> None:
    """refiner128s: the student of refiner128 (its own weights, sha256, data card and the frame path's contract),
    with no convolution at the full 128 px (the thin full-resolution ones are what int8 kernels run worst)."""
    from enliven.engine.choices import FACE_REFINERS, FAST_REFINER
    from enliven.engine.contract import FRAME_PATH_CONTRACT, InputContract, contract_for, holds
    from enliven.engine.warp import LID_SLIDE_WARP_VERSION

    assert FAST_REFINER in FACE_REFINERS and FAST_REFINER != gen.DEFAULT_GENERATOR
    path = gen.shipped_weights_path(FAST_REFINER)
    assert path.name == "refiner128s.pt" and (gen.WEIGHTS_DIR / "refiner128s.md").exists()
    student, teacher = gen.load_generator(FAST_REFINER), gen.load_generator()
    assert student.config.top == "shuffle" and teacher.config.top == "full"
    blob = torch.load(path, map_location="cpu", weights_only=True)
    assert blob["contract"] == contract_for(LID_SLIDE_WARP_VERSION).to_dict()  # trained on 5, valid on 6
    assert holds(InputContract.from_dict(blob["contract"]), FRAME_PATH_CONTRACT) and blob["meta"]["teacher"] == "refiner128"
    def conv_sides(model: gen.Refiner) -> set[int]:
        sides: set[int] = set()
        hooks = [m.register_forward_hook(lambda _m, _i, out: sides.add(out.shape[-1]))
                 for m in model.decoder.modules() if isinstance(m, torch.nn.Conv2d)]
        with torch.no_grad():
            model(*inputs(model, n=1))
        for h in hooks:
            h.remove()
        return sides

    assert max(conv_sides(teacher)) == 128 and max(conv_sides(student)) == 64
    # the photo's code is the teacher's (its encoder was copied and kept)
    x = inputs(student)
    with torch.no_grad():
        torch.testing.assert_close(student.encoder(x[0]), teacher.encoder(x[0]))


def test_the_distilled_refiner_gives_nearly_the_teachers_frames(astronaut, astronaut_face) -> None:
    """Through the Animator (ONNX Runtime), the student's crops differ from the teacher's by a grey level or two
    on average, and each runs its own weights."""
    from enliven.animation.animator import Animator, AnimatorConfig

    outs = {}
    for name in ("refiner128", "refiner128s"):
        with Animator(AnimatorConfig(output="crop", generator=name, eye_patch_weights=None)) as anim:
            anim.prepare(astronaut)
            moved = astronaut_face.landmarks.copy()
            moved[:, 1] += 6.0
            for k in range(3):
                outs[name] = anim.step_landmarks(moved if k else astronaut_face.landmarks, t=k / 30).astype(int)
    diff = np.abs(outs["refiner128"] - outs["refiner128s"])
    assert 0 < diff.mean() < 2.0, diff.mean()
    with pytest.raises(ValueError, match="generator"):
        AnimatorConfig(generator="refiner64")


def test_animator_runs_the_generator_in_onnxruntime_like_torch(astronaut, astronaut_face) -> None:
    """The default backend (exported graphs in ONNX Runtime) gives torch's frames, to rounding."""
    from enliven.animation.animator import Animator, AnimatorConfig

    outs, providers = {}, {}
    for backend in ("onnxruntime", "torch"):
        with Animator(AnimatorConfig(output="crop", backend=backend)) as anim:
            anim.prepare(astronaut)
            providers[backend] = anim.generator_provider
            moved = astronaut_face.landmarks.copy()
            moved[:, 1] += 6.0  # a small nod-like move so the refiner has work to do
            for k in range(3):
                outs[backend] = anim.step_landmarks(moved if k else astronaut_face.landmarks, t=k / 30)
    assert providers == {"onnxruntime": "CPUExecutionProvider", "torch": "torch:cpu"}
    diff = np.abs(outs["onnxruntime"].astype(int) - outs["torch"].astype(int))
    assert diff.max() <= 1, diff.max()
    with pytest.raises(ValueError, match="precision"):
        AnimatorConfig(backend="torch", precision="int8")


def test_shipped_weights_carry_the_frame_paths_input_contract() -> None:
    """The shipped refiner records the contract it was trained under (warp 5), which holds for the frame path's
    (warp 6: warp 5 with the border release, VALID_ON_LATER_WARPS); a warp it is not valid on is refused."""
    from enliven.engine.contract import FRAME_PATH_CONTRACT, InputContract, contract_for, holds
    from enliven.engine.warp import LID_SLIDE_WARP_VERSION, SQUASH_WARP_VERSION, WARP_VERSION

    blob = torch.load(gen.shipped_weights_path(), map_location="cpu", weights_only=True)
    assert blob["contract"] == contract_for(LID_SLIDE_WARP_VERSION).to_dict()
    recorded = InputContract.from_dict(blob["contract"])
    assert FRAME_PATH_CONTRACT.warp_version == WARP_VERSION and holds(recorded, FRAME_PATH_CONTRACT)
    assert gen.load_generator(expected=contract_for(WARP_VERSION)).config.resolution_px == 128
    assert not holds(recorded, contract_for(SQUASH_WARP_VERSION))  # valid on later warps only
    assert not holds(InputContract.from_dict(contract_for(SQUASH_WARP_VERSION).to_dict()), FRAME_PATH_CONTRACT)
    old = gen.shipped_weights_path(warp_version=SQUASH_WARP_VERSION)  # step 7228, for WarpConfig(lid_slide=False)
    assert old != gen.shipped_weights_path() and old.with_suffix(".sha256").exists()
    blob = torch.load(old, map_location="cpu", weights_only=True)
    assert blob["contract"] == contract_for(SQUASH_WARP_VERSION).to_dict() and blob["meta"]["step"] == 7228
    assert gen.load_generator(expected=contract_for(SQUASH_WARP_VERSION)).config.resolution_px == 128


def test_weights_of_another_input_contract_are_refused(tmp_path) -> None:
    from dataclasses import replace

    from enliven.engine.contract import FRAME_PATH_CONTRACT

    m = gen.create_generator("refiner32-test")
    other = replace(FRAME_PATH_CONTRACT, warp_version=FRAME_PATH_CONTRACT.warp_version - 1, crop_scale=1.8)
    gen.save_weights(m, tmp_path / "old.pt", "refiner32-test", contract=other)
    with pytest.raises(ModelFileError, match="crop_scale.*warp_version"):
        gen.load_generator(path=tmp_path / "old.pt")
    assert gen.load_generator(path=tmp_path / "old.pt", expected=other) is not None


def test_weights_without_a_contract_are_refused(tmp_path) -> None:
    m = gen.create_generator("refiner32-test")
    path = tmp_path / "bare.pt"
    gen.save_weights(m, path, "refiner32-test")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    del blob["contract"]
    torch.save(blob, path)
    with pytest.raises(ModelFileError, match="no input contract"):
        gen.load_generator(path=path)
