"""Parts of the cluster mode that need no Ray: the announced address, the --cluster spelling, the memory
of ended sessions, the actor run in-process, and the one-line error when Ray is missing."""
from __future__ import annotations

import asyncio
import subprocess
import sys

import numpy as np
import pytest

from enliven.cluster.actor import SessionActor
from enliven.cluster.announce import ANNOUNCED_ADDRESS_ENV, announce, announced_address
from enliven.cluster.messages import CHUNK_BYTES, Chunk, Node, Opened, Refused
from enliven.engine.errors import EnlivenError, NoFaceError
from enliven.server.config import ClusterConfig, ServerConfig
from enliven.server.ended import EndedSessions
from enliven.server.session_animator import NO_DEBUG, EngineSettings

ANSWER = "\r\n".join([
    "v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0", "m=video 9 UDP/TLS/RTP/SAVPF 97", "c=IN IP4 10.0.0.7",
    "a=mid:0",
    "a=candidate:" + "f" * 32 + " 1 udp 2130706431 10.0.0.7 51000 typ host",
    "a=candidate:" + "e" * 32 + " 1 udp 2130706431 172.17.0.1 51001 typ host",
    "a=candidate:" + "d" * 32 + " 1 udp 1694498815 203.0.113.9 51000 typ srflx raddr 10.0.0.7 rport 51000",
    "a=end-of-candidates", ""])


def test_announce_adds_a_public_copy_of_each_host_candidate() -> None:
    out = announce(ANSWER, "198.51.100.4").split("\r\n")
    copies = [line for line in out if " 198.51.100.4 " in line]
    assert [c.split()[5] for c in copies] == ["51000", "51001"], "same ports as the host candidates"
    assert all(c.endswith("typ host") and " 2130706430 " in c for c in copies), "typ host, priority one less"
    foundations = [line.split()[0][len("a=candidate:"):] for line in out if line.startswith("a=candidate:")]
    assert len(set(foundations)) == len(foundations) and max(map(len, foundations)) <= 32
    assert out.index(copies[0]) == out.index(next(x for x in out if " 10.0.0.7 51000 " in x)) + 1
    assert announce(ANSWER, "10.0.0.7").count(" 10.0.0.7 51000 typ host") == 1, "no copy of the same address"
    assert announce(ANSWER.replace("\r\n", "\n"), "198.51.100.4").count("\n") == ANSWER.count("\r\n") + 2


def test_announced_address_is_checked() -> None:
    assert announced_address({}) is None and announced_address({ANNOUNCED_ADDRESS_ENV: " "}) is None
    assert announced_address({ANNOUNCED_ADDRESS_ENV: "2001:db8::1"}) == "2001:db8::1"
    with pytest.raises(EnlivenError, match=ANNOUNCED_ADDRESS_ENV):
        announced_address({ANNOUNCED_ADDRESS_ENV: "node.example.org"})


def test_cluster_spelling() -> None:
    assert ClusterConfig.parse("ray") == ClusterConfig(address=None)
    assert ClusterConfig.parse("ray:auto", wait_s=5.0).address == "auto"
    assert ClusterConfig.parse("ray:10.0.0.5:6379").address == "10.0.0.5:6379"
    for bad in ("ray:", "spark", "rays:auto"):
        with pytest.raises(ValueError, match="ray:ADDRESS"):
            ClusterConfig.parse(bad)
    with pytest.raises(ValueError, match="wait_s"):
        ClusterConfig(wait_s=0)


def test_ended_sessions_answer_only_to_the_token() -> None:
    ended = EndedSessions(capacity=2)
    ended.add("a", "token-a", "heartbeat timeout")
    assert ended.reason("a", "token-a") == "heartbeat timeout"
    assert ended.reason("a", "token-b") is None and ended.reason("b", "token-a") is None
    ended.add("b", "tb", "x")
    ended.add("c", "tc", "y")
    assert ended.reason("a", "token-a") is None, "the oldest is forgotten beyond capacity"
    assert "tb" not in repr(ended._endings) and "token-a" not in repr(ended._endings), "only digests are kept"


def test_refusals_carry_engine_errors_by_code() -> None:
    refused = Refused.of(NoFaceError("no face in the photo"))
    assert refused.status == 0 and isinstance(refused.engine_error(), NoFaceError)


def test_actor_in_process_takes_a_chunked_photo_and_drops_it(astronaut: np.ndarray) -> None:
    """The actor without Ray: the photo arrives in chunks, is read back in chunks, and is gone after end."""
    from enliven.engine.image_io import encode_png

    upload = encode_png(astronaut)
    assert len(upload) > 2 * CHUNK_BYTES
    node = Node("node-a", "127.0.0.1", None, 1)
    actor = SessionActor(ServerConfig(engine="analytic"), "sid-0123456789", EngineSettings(engine="analytic"),
                         NO_DEBUG, node)

    async def go() -> tuple[object, bytes, object, object, object]:
        chunks = [Chunk(i, upload[i:i + CHUNK_BYTES], len(upload)) for i in range(0, len(upload), CHUNK_BYTES)]
        for chunk in reversed(chunks):  # any order
            await actor.put_upload(chunk)
        opened = await actor.open("token", "uploaded")
        first = await actor.photo_chunk(7, 0)
        parts, offset = [first.data], len(first.data)
        while offset < first.total:
            chunk = await actor.photo_chunk(7, offset)
            parts.append(chunk.data)
            offset += len(chunk.data)
        waiting = asyncio.ensure_future(actor.next_state("created", 30.0))
        ended = await actor.end("deleted by the user")
        return opened, b"".join(parts), await waiting, ended, await actor.photo_chunk(8, 0)

    opened, png, change, ended, after = asyncio.run(go())
    assert isinstance(opened, Opened) and opened.node == node and opened.face_count == 1
    assert png.startswith(b"\x89PNG") and len(png) > CHUNK_BYTES
    assert change.state == "ended" and change.reason == "deleted by the user"
    assert ended.photos_alive == 0 and ended.state == "ended"
    assert after.total == 0, "no photo to read once the session ended"


def test_cluster_without_ray_is_one_line_naming_the_extra(tmp_path: object) -> None:
    """With Ray missing, ``--cluster`` fails in one line that names the extra, no traceback."""
    code = ("import sys, importlib.abc\n"
            "class NoRay(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path, target=None):\n"
            "        if name == 'ray' or name.startswith('ray.'): raise ImportError('no ray', name='ray')\n"
            "sys.meta_path.insert(0, NoRay())\n"
            "from enliven.server.__main__ import main\n"
            "sys.exit(main(['--cluster', 'ray', '--port', '0']))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    assert "enliven[cluster]" in done.stderr and "Traceback" not in done.stderr


def test_an_unreachable_cluster_is_one_line() -> None:
    """``--cluster ray:HOST:PORT`` with nothing there fails at once in one line (ray.init would retry for minutes)."""
    pytest.importorskip("ray", reason="the cluster extra is not installed (pip install -e '.[cluster]')")
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = subprocess.run([sys.executable, "-m", "enliven.server", "--cluster", f"ray:127.0.0.1:{port}", "--port", "0"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    assert f"cannot reach the Ray cluster at 127.0.0.1:{port}" in done.stderr and "Traceback" not in done.stderr
