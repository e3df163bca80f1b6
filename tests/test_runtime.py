import numpy as np
import pytest
import torch

from enliven.engine.errors import ModelFileError
from enliven.engine.runtime import OnnxModel, RuntimeConfig, TorchModel, default_threads, pick_providers


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(6, 4, 3, padding=1)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.conv(torch.cat([a, b], 1))
        return torch.tanh(y[:, :3]), torch.sigmoid(y[:, 3:])


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    torch.manual_seed(0)
    module = Tiny().eval()
    path = tmp_path_factory.mktemp("model") / "tiny.onnx"
    example = (torch.randn(1, 3, 32, 32), torch.randn(1, 3, 32, 32))
    torch.onnx.export(module, example, str(path), dynamo=False, opset_version=17, input_names=["a", "b"],
                      output_names=["rgb", "mask"], dynamic_axes={"a": {0: "n"}, "b": {0: "n"}})
    return module, path


def test_cpu_provider_is_picked_here_and_reported(tiny_onnx):
    _, path = tiny_onnx
    model = OnnxModel(path)
    assert model.provider == "CPUExecutionProvider"  # this machine has no GPU
    assert pick_providers()[-1] == "CPUExecutionProvider"
    assert model.input_names == ("a", "b") and model.output_names == ("rgb", "mask")
    assert 1 <= default_threads() <= 4


def test_onnx_matches_torch(tiny_onnx):
    module, path = tiny_onnx
    rng = np.random.default_rng(0)
    a, b = (rng.normal(size=(2, 3, 32, 32)).astype(np.float32) for _ in range(2))
    onnx_out = OnnxModel(path, RuntimeConfig(intra_op_threads=1))(a=a, b=b)
    torch_out = TorchModel(module, ("a", "b"), ("rgb", "mask"))(a=a, b=b)
    for name in ("rgb", "mask"):
        assert onnx_out[name].shape == (2, 3 if name == "rgb" else 1, 32, 32)
        assert np.abs(onnx_out[name] - torch_out[name]).max() < 1e-5


def test_missing_or_corrupt_model_gives_a_clear_error(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        OnnxModel(tmp_path / "absent.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf")
    with pytest.raises(ModelFileError, match="cannot load"):
        OnnxModel(bad)
    with pytest.raises(ModelFileError, match="providers"):
        pick_providers(("NoSuchExecutionProvider",))


def test_tensorrt_provider_gets_an_engine_cache_and_others_pass_through(tmp_path):
    from enliven.engine.runtime import provider_options

    opts = provider_options(["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
                            cache_dir=tmp_path / "trt")
    name, trt = opts[0]
    assert name == "TensorrtExecutionProvider" and trt["trt_engine_cache_enable"] == "True"
    assert trt["trt_engine_cache_path"] == str(tmp_path / "trt") and (tmp_path / "trt").is_dir()
    assert opts[1:] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
