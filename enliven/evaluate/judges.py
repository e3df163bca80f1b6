"""The networks that judge an output: a perceptual distance, dlib's identity embedding (CSIM) and
MediaPipe in static mode (landmarks of an output, for AKD, pose and expression errors).

Each is loaded once per evaluation (``Judges.load``) and reused for every frame. None of them is
a training loss of the generator except the perceptual net (see ``PerceptualDistance``).
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..engine import topology as topo
from ..engine.errors import ModelFileError
from ..engine.landmarks import native_logs_silenced
from ..train.losses import PerceptualLoss
from .metrics import checked_mask


class PerceptualDistance:
    """EfficientNet-Lite0 (ImageNet) feature distance, as in the training loss; 0 for identical images.

    LPIPS's weights cannot be had offline; this is the same kind of measure on the network we ship
    with the `train` extra. Off-mask pixels are replaced by the reference's before both pass the net.
    Raises: ModelFileError (naming the extra) when the network's package is missing.
    """

    def __init__(self) -> None:
        self.loss = PerceptualLoss().eval()

    def __call__(self, a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
        """Distance of (H, W, 3) uint8 ``a`` to the reference ``b``, mask (H, W) in [0, 1] or None."""
        m = torch.from_numpy(checked_mask(mask, a.shape)).float()[None, None]
        ta = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].float() / 255
        tb = torch.from_numpy(np.ascontiguousarray(b)).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            return float(self.loss(ta * m + tb * (1 - m), tb))


class DlibIdentity:
    """dlib's 128-d face embedding (face_recognition_models, loaded by path); the face box comes from landmarks.

    Raises: ModelFileError (naming the extra) when dlib or face_recognition_models is missing.
    """

    def __init__(self) -> None:
        try:
            import dlib  # the `train` extra: only evaluation needs it

            spec = importlib.util.find_spec("face_recognition_models")
        except ImportError as e:
            raise ModelFileError("CSIM needs dlib-bin and face_recognition_models: pip install 'enliven[train]'") from e
        if spec is None or not spec.submodule_search_locations:
            raise ModelFileError("CSIM needs face_recognition_models: pip install 'enliven[train]'")
        models = Path(list(spec.submodule_search_locations)[0]) / "models"
        self._dlib = dlib
        self._shape = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self._net = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))

    def embed(self, image: np.ndarray, points: np.ndarray) -> np.ndarray:
        """(128,) float64 embedding of the face whose landmarks (478, 2|3) are given, image (H, W, 3) uint8 RGB."""
        oval = np.asarray(points)[topo.FACE_OVAL, :2]
        (x0, y0), (x1, y1) = oval.min(0), oval.max(0)
        top = y0 + 0.15 * (y1 - y0)  # dlib's boxes start about at the brows
        rect = self._dlib.rectangle(int(x0), int(top), int(x1), int(y1))
        shape = self._shape(np.ascontiguousarray(image), rect)
        return np.array(self._net.compute_face_descriptor(np.ascontiguousarray(image), shape))

    @staticmethod
    def cosine(a: np.ndarray, b: np.ndarray) -> float:
        """Cosine similarity of two embeddings (128,); CSIM."""
        return float(np.dot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


class StaticMesh:
    """MediaPipe FaceMesh in static mode, one instance reused: landmarks of a crop, or None."""

    def __init__(self) -> None:
        import mediapipe as mp  # takes seconds to import; engine.landmarks defers it the same way

        with native_logs_silenced():
            self._mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1,
                                                         refine_landmarks=True, min_detection_confidence=0.3)
        self._first = True

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        """(478, 3) float64 landmarks in pixels of (H, W, 3) uint8 RGB ``image``; None when no face is found."""
        if self._first:  # the first run prints the TFLite delegate lines
            with native_logs_silenced():
                r = self._mesh.process(np.ascontiguousarray(image))
            self._first = False
        else:
            r = self._mesh.process(np.ascontiguousarray(image))
        if not r.multi_face_landmarks:
            return None
        h, w = image.shape[:2]
        pts = np.array([(p.x, p.y, p.z) for p in r.multi_face_landmarks[0].landmark], np.float64)
        return pts * [w, h, w]


@dataclass(frozen=True)
class Judges:
    """The three judges of one evaluation run."""

    perceptual: PerceptualDistance
    identity: DlibIdentity
    mesh: StaticMesh

    @classmethod
    def load(cls) -> Judges:
        """Load all three. Raises: ModelFileError when the `train` extra is missing."""
        return cls(PerceptualDistance(), DlibIdentity(), StaticMesh())
