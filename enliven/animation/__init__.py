"""One stream's animation: the Animator (photo + driving frames -> frames) and its pipelined form.

This layer composes the frame path (``enliven.engine``) with the learned generator, exported to
ONNX on first use (``enliven.export``). The server, the offline CLI and the benchmarks use it.
"""
from .animator import STAGES, Animator, AnimatorConfig, Source, StepInfo
from .pipeline import PipelinedAnimator

__all__ = ["STAGES", "Animator", "AnimatorConfig", "PipelinedAnimator", "Source", "StepInfo"]
