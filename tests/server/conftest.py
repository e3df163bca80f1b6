"""Fixtures of the server tests: a shared server process, the synthetic webcam clip, photos."""
from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from server_harness import NO_LIMITS, TEST_TIMEOUTS, Server, start_server, stop_server


def pytest_configure(config: pytest.Config) -> None:
    """Hypothesis keeps its caches in the temporary folder, never in the checkout."""
    try:
        from hypothesis.configuration import set_hypothesis_home_dir
    except ImportError:  # hypothesis comes with the dev extra
        return
    set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "enliven-hypothesis")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The server most tests share: 4 sessions, no practical rate limits or per-client cap, test timeouts."""
    s = start_server(tmp_path_factory.mktemp("server") / "server.log", "--max-sessions", "4", *NO_LIMITS,
                     *TEST_TIMEOUTS)
    yield s
    stop_server(s)


@pytest.fixture(scope="session")
def clip() -> list[np.ndarray]:
    """The synthetic webcam: 10 s of the built-in face moving, 640x480 at 25 fps."""
    from enliven.fixtures import driving_frames

    return driving_frames(640, 480, fps=25.0)


@pytest.fixture(scope="session")
def photo_png() -> bytes:
    from enliven.engine.defaults import builtin_photo
    from enliven.engine.image_io import encode_png

    return encode_png(builtin_photo())
