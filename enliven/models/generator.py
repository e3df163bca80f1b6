"""The learned generator: a small refiner that turns the analytic warp into a realistic face.

Two parts, so the photo's side runs once per photo and only the cheap part runs per frame:

    source crop (1, 3, R, R) --SourceEncoder (once per photo)--> code (1, C)
    warped crop (1, 3, R, R) + landmark drawing (1, 3, R, R) + face gate (1, 1, R, R) + code
        --RefinerDecoder (per frame)--> delta (1, 3, R, R), mask (1, 1, R, R)

R is the refiner's resolution (128 by default). The decoder is a small U-Net whose levels are
modulated by the source code (FiLM: per-channel scale and shift), so it knows the person's skin,
lips and teeth even where the warp shows none. It predicts a residual RGB (tanh) and a blend
mask bounded to [MASK_MIN, MASK_MAX] (an unbounded mask collapses to 0 = "keep the warp"),
and the result is gated to the face: ``delta = gate * mask * (clamp(warp + residual) - warp)``.
The caller adds ``delta`` (upsampled to the crop's own size) to the full-resolution warp, so
the refiner's cost does not grow with the output size. Running it on frames (inputs, runner,
ONNX Runtime or torch) is ``refine.py``; exporting it to ONNX is ``enliven.export``.

Images are float32 in [0, 1], NCHW, RGB. Only plain convolutions, resizes and element-wise ops:
the graph exports to ONNX (no 5-D grid_sample, no matrix inverse).
"""
from __future__ import annotations

import logging
import pickle
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..engine.contract import FRAME_PATH_CONTRACT, InputContract, check_recorded
from ..engine.errors import ModelFileError
from ._layers import MASK_MAX, MASK_MIN, GeneratorOutput, conv
from .patches import PatchConfig, PatchRefiner
from .shipped import (  # noqa: F401  (DEFAULT_GENERATOR, WEIGHTS_DIR, check_sha256, sha256_file: re-exported)
    DEFAULT_GENERATOR,
    SHIPPED,
    WEIGHTS_DIR,
    check_sha256,
    sha256_file,
    shipped_file,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GeneratorConfig:
    """Architecture of a refiner (what a checkpoint must match to be loaded)."""

    resolution_px: int = 128  # side of the refiner's input and output, pixels
    widths: tuple[int, ...] = (12, 24, 48, 96)  # decoder U-Net channels per level (level i at R / 2**i)
    bottleneck: int = 128  # channels at the lowest level (R / 2**len(widths))
    code_dim: int = 64  # length of the source code
    encoder_widths: tuple[int, ...] = (16, 32, 64, 96, 128)  # source encoder, stride 2 each
    residual_scale: float = 1.0  # tanh residual times this, image units
    # "full": the top level runs at R (stem and last block at R, widths[0] channels); "shuffle": the top
    # level runs at R/2 with widths[1] channels: a 6x6 stride-2 stem (the same as a 3x3 convolution of the
    # inputs folded 2x2 into channels) and a head whose 16 channels unfold to the 4 outputs at R (pixel
    # shuffle). Thin convolutions at full resolution are what int8 kernels run worst.
    top: str = "full"

    def __post_init__(self) -> None:
        if self.resolution_px % (2 ** len(self.widths)):
            raise ValueError(f"resolution_px {self.resolution_px} must be divisible by 2**{len(self.widths)}")
        if self.top not in ("full", "shuffle"):
            raise ValueError(f"top must be 'full' or 'shuffle'; got {self.top!r}")
        if self.top == "shuffle" and len(self.widths) < 2:
            raise ValueError("top='shuffle' needs at least two widths")


_conv = conv


class SourceEncoder(nn.Module):
    """Source crop (N, 3, R, R) in [0, 1] -> code (N, code_dim). Run once per photo."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for w in cfg.encoder_widths:
            layers += [_conv(cin, w, 2), _conv(w, w)]
            cin = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(cin * 2, cfg.code_dim)

    def forward(self, source: torch.Tensor) -> torch.Tensor:
        f = self.features(source * 2 - 1)
        pooled = torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1)
        return self.head(pooled)


class _Film(nn.Module):
    """Per-channel scale and shift from the source code: x * (1 + g) + b."""

    def __init__(self, code_dim: int, channels: int) -> None:
        super().__init__()
        self.linear = nn.Linear(code_dim, 2 * channels)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        g, b = self.linear(code).unsqueeze(-1).unsqueeze(-1).chunk(2, dim=1)
        return x * (1 + g) + b


class RefinerDecoder(nn.Module):
    """Per-frame part: (warp, drawing, gate, code) -> GeneratorOutput. See the module docstring."""

    IN_CHANNELS = 6  # warped RGB + 3-channel landmark drawing

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w = list(cfg.widths)
        shuffle = cfg.top == "shuffle"
        # "shuffle": the stem goes straight to level 1; the top level's skip is its output
        self.stem = (nn.Sequential(nn.Conv2d(self.IN_CHANNELS, w[1], 6, 2, 2), nn.LeakyReLU(0.2, inplace=True))
                     if shuffle else _conv(self.IN_CHANNELS, w[0]))
        self.down = nn.ModuleList()
        self.enc = nn.ModuleList()
        for i in range(len(w)):
            cout = w[i + 1] if i + 1 < len(w) else cfg.bottleneck
            self.down.append(nn.Identity() if shuffle and i == 0 else _conv(w[i], cout, 2))
            self.enc.append(_conv(cout, cout))
        self.films = nn.ModuleList([_Film(cfg.code_dim, cfg.bottleneck)])
        self.up = nn.ModuleList()
        for i in reversed(range(len(w))):
            cin = (w[i + 1] if i + 1 < len(w) else cfg.bottleneck) + w[i]
            wi = w[i]
            if shuffle and i == 0:  # the top block at R/2: level 1's output and the stem's
                cin, wi = 2 * w[1], w[1]
            self.up.append(nn.Sequential(_conv(cin, wi), _conv(wi, wi)))
            self.films.append(_Film(cfg.code_dim, wi))
        self.head = nn.Conv2d(w[1], 16, 3, 1, 1) if shuffle else nn.Conv2d(w[0], 4, 3, 1, 1)
        nn.init.normal_(self.head.weight, std=1e-3)
        nn.init.zeros_(self.head.bias)

    def forward(self, warped: torch.Tensor, drawing: torch.Tensor, gate: torch.Tensor,
                code: torch.Tensor) -> GeneratorOutput:
        x = self.stem(torch.cat([warped * 2 - 1, drawing * 2 - 1], dim=1))
        skips = [x]
        for down, enc in zip(self.down, self.enc):
            x = enc(down(x))
            skips.append(x)
        x = self.films[0](skips.pop(), code)
        for up, film in zip(self.up, self.films[1:]):
            skip = skips.pop()
            if x.shape[-1] != skip.shape[-1]:
                x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = film(up(torch.cat([x, skip], dim=1)), code)
        h = self.head(x)
        if self.cfg.top == "shuffle":
            h = F.pixel_shuffle(h, 2)
        residual = torch.tanh(h[:, :3]) * self.cfg.residual_scale
        mask = MASK_MIN + (MASK_MAX - MASK_MIN) * torch.sigmoid(h[:, 3:4])
        refined = torch.clamp(warped + residual, 0.0, 1.0)
        return GeneratorOutput(gate * mask * (refined - warped), mask)


class Refiner(nn.Module):
    """Source encoder + per-frame decoder. ``forward`` runs both (training); inference caches the code."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        self.config = cfg
        self.encoder = SourceEncoder(cfg)
        self.decoder = RefinerDecoder(cfg)

    def forward(self, source: torch.Tensor, warped: torch.Tensor, drawing: torch.Tensor,
                gate: torch.Tensor) -> GeneratorOutput:
        """Args: source, warped, drawing (N, 3, R, R), gate (N, 1, R, R), all float32 in [0, 1]."""
        return self.decoder(warped, drawing, gate, self.encoder(source))


# --- registry -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GeneratorSpec:
    """A registered generator: its architecture and where its shipped weights are (if any)."""

    name: str
    config: GeneratorConfig | PatchConfig  # a face refiner's or a patch refiner's architecture
    weights: str | None = None  # file name in models/weights/ (its sha256 beside it, <name>.sha256); None = none
    weights_by_warp: tuple[tuple[int, str], ...] = ()  # shipped weights for other warp versions: (version, file)
    notes: str = ""


_REGISTRY: dict[str, GeneratorSpec] = {}


def register(spec: GeneratorSpec) -> GeneratorSpec:
    _REGISTRY[spec.name] = spec
    return spec


register(GeneratorSpec("refiner128", GeneratorConfig(), weights=SHIPPED["refiner128"].file,
                       weights_by_warp=SHIPPED["refiner128"].by_warp,  # 4: step 7228, WarpConfig(lid_slide=False)
                       notes="U-Net refiner at 128, FiLM source code; data card weights/refiner128.md"))
register(GeneratorSpec("refiner128s", GeneratorConfig(top="shuffle"), weights=SHIPPED["refiner128s"].file,
                       weights_by_warp=SHIPPED["refiner128s"].by_warp,  # 4: step 7228 (no student for it)
                       notes="refiner128 distilled into a top level at 64 px (train/distill.py); data card "
                             "weights/refiner128s.md"))
register(GeneratorSpec("patch-eye64", PatchConfig(side_px=64), weights=SHIPPED["patch-eye64"].file,
                       weights_by_warp=SHIPPED["patch-eye64"].by_warp,  # 4: behind step 7228
                       notes="eye patch refiner, 64 px from the crop (engine/patches.py); data card "
                             "weights/patch_eye64.md"))
register(GeneratorSpec("patch-mouth96", PatchConfig(side_px=96, widths=(16, 32, 48, 64), bottleneck=96),
                       notes="mouth patch refiner, 96 px from the 512 crop (engine/patches.py); no shipped weights yet"))
register(GeneratorSpec("patch16-test", PatchConfig(side_px=16, widths=(8, 8), bottleneck=8),
                       notes="for tests: a 16 px patch refiner"))
register(GeneratorSpec("refiner32-test", GeneratorConfig(resolution_px=32, widths=(8, 16), bottleneck=16, code_dim=8,
                                                         encoder_widths=(8, 16)),
                       notes="for tests and smoke runs: 32 px, a few thousand parameters"))
register(GeneratorSpec("refiner32s-test", GeneratorConfig(resolution_px=32, widths=(8, 16), bottleneck=16, code_dim=8,
                                                          encoder_widths=(8, 16), top="shuffle"),
                       notes="for tests: refiner32-test with the 64 px-style top level"))


def list_generators() -> list[str]:
    return sorted(_REGISTRY)


def generator_spec(name: str) -> GeneratorSpec:
    """The registered spec ``name``. Raises ValueError listing the choices for an unknown name."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown generator {name!r}; choose one of {', '.join(list_generators())}") from None


def create_generator(name: str, **overrides: object) -> Refiner | PatchRefiner:
    """A new (untrained) generator of architecture ``name`` (a face or a patch refiner), config fields overridden.

    Raises: ValueError for an unknown name or an unknown config field.
    """
    spec = generator_spec(name)
    fields = set(asdict(spec.config))
    unknown = set(overrides) - fields
    if unknown:
        raise ValueError(f"unknown generator config field(s) {sorted(unknown)}; known: {sorted(fields)}")
    cfg = replace(spec.config, **{k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()})
    return PatchRefiner(cfg) if isinstance(cfg, PatchConfig) else Refiner(cfg)


def save_weights(model: Refiner, path: Path, name: str, meta: dict | None = None,
                 contract: InputContract = FRAME_PATH_CONTRACT) -> str:
    """Write a small weights file (fp16 state dict + config + name) and ``<path>.sha256``; returns the sha256.

    ``contract``: the frame path's input contract the weights were trained under (default: today's).
    """
    state = {k: (v.detach().to(torch.float16) if v.is_floating_point() else v).cpu()
             for k, v in model.state_dict().items()}
    torch.save({"name": name, "config": asdict(model.config), "state_dict": state, "meta": meta or {},
                "contract": contract.to_dict()}, path)
    digest = sha256_file(path)
    Path(path).with_suffix(".sha256").write_text(f"{digest}  {Path(path).name}\n")
    return digest


def shipped_weights_path(name: str | None = None, warp_version: int | None = None) -> Path:
    """Where the shipped weights of generator ``name`` (default: the default one) live in the package:
    those trained on ``warp_version`` where the generator ships some for it, else its default ones.

    Raises: ValueError for an unknown name; ModelFileError when that generator ships no weights.
    """
    spec = generator_spec(name or DEFAULT_GENERATOR)  # unknown names: ValueError with the choices
    return shipped_file(spec.name, warp_version)


def load_generator(name: str | None = None, path: Path | None = None,
                   expected: InputContract = FRAME_PATH_CONTRACT) -> Refiner:
    """A trained generator in eval mode: the shipped weights of ``name``, or a weights file ``path``.

    The weights' input contract must equal ``expected`` (the frame path's own, by default).
    Raises: ModelFileError when the file is missing, corrupt, of another architecture, fails its sha256,
    or was trained under another input contract (or records none).
    """
    if path is None:
        path = shipped_weights_path(name, expected.warp_version)
        check_sha256(path)
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        cfg_dict = {k: tuple(v) if isinstance(v, list) else v for k, v in blob["config"].items()}
        model = Refiner(GeneratorConfig(**cfg_dict))
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in blob["state_dict"].items()})
        contract = blob.get("contract")
    except FileNotFoundError as e:
        raise ModelFileError(f"weights file {path} not found") from e
    except (RuntimeError, KeyError, TypeError, ValueError, EOFError, OSError, pickle.UnpicklingError) as e:
        raise ModelFileError(f"weights file {path} is not a valid enliven generator ({e})") from e
    check_contract(contract, expected, path)
    return model.eval()


def check_contract(recorded: dict | None, expected: InputContract, path: Path) -> None:
    """Raise ModelFileError unless the weights' recorded contract is ``expected`` (``contract.check_recorded``)."""
    check_recorded(recorded, expected, path)


def count_flops(model: Refiner, batch: int = 1) -> tuple[int, int]:
    """(decoder FLOPs per frame, encoder FLOPs per photo), counted by torch (2 per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    r = model.config.resolution_px
    device = next(model.parameters()).device
    x = torch.zeros(batch, 3, r, r, device=device)
    g = torch.zeros(batch, 1, r, r, device=device)
    with torch.no_grad():
        with FlopCounterMode(display=False) as enc:
            code = model.encoder(x)
        with FlopCounterMode(display=False) as dec:
            model.decoder(x, x, g, code)
    return dec.get_total_flops() // batch, enc.get_total_flops() // batch


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


