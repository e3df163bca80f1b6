"""A real `enliven serve` in its own process for the benchmarks: start it, read its URL, stop it."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

# The benchmarks' clients share one address: lift the per-address limits so only capacity counts.
NO_CLIENT_LIMITS = ("--create-rate", "6000", "--create-burst", "1000", "--offer-rate", "6000", "--offer-burst", "1000",
                    "--max-sessions-per-client", "100")


def start_server(log: Path, *args: str, env_extra: dict[str, str] | None = None,
                 timeout_s: float = 180.0) -> tuple[subprocess.Popen[bytes], str]:
    """``python -m enliven.server --port 0 --debug-endpoints --echo-frame-ids *args``, its output in ``log``.

    Returns the process and its URL (no trailing slash) once it says it serves. Raises RuntimeError
    with the log's tail when it exits or does not start within ``timeout_s``.
    """
    env = dict(os.environ, GLOG_minloglevel="2", TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1", **(env_extra or {}))
    cmd = [sys.executable, "-m", "enliven.server", "--port", "0", "--debug-endpoints", "--echo-frame-ids", *args]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        m = re.search(r"serving on (http://\S+)", log.read_text(errors="replace"))
        if m:
            return proc, m.group(1).rstrip("/")
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"the server did not start:\n{log.read_text(errors='replace')[-2000:]}")


def stop_server(proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout_s``."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
