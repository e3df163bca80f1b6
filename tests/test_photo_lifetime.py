"""A photo lives no longer than its last use: nothing MediaPipe or the engine keeps refers to it.

Run in a fresh process, because the leak this guards against happened only on MediaPipe's first
use in a process (a lazy import whose kept traceback held the caller's frame, photo included).
"""
from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import gc, weakref
from enliven.animation import Animator, AnimatorConfig
from enliven.engine.defaults import builtin_photo
from enliven.engine.landmarks import detect_photo_face

photo = builtin_photo().copy()
ref = weakref.ref(photo)
detect_photo_face(photo)
del photo
gc.collect()
first = ref() is None

photo = builtin_photo().copy()
ref = weakref.ref(photo)
with Animator(AnimatorConfig(engine="analytic", output="crop")) as animator:
    animator.prepare(photo)
    animator.step_landmarks(None, t=0.0)
del photo
gc.collect()
print(first, ref() is None)
"""


def test_a_photo_is_freed_after_its_last_use_even_on_mediapipes_first_run() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["True", "True"], "detect_photo_face / Animator kept the photo alive"
