"""P6: the regression corpus (tests/corpora/offers/, written by tests/corpora/make_sdp_corpus.py): every offer
body that once made the server fail is replayed, in this process and against the real server. ``refuse-*``
must be answered 400; ``accept-*`` must give an answer."""
from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from server_harness import Server

from enliven.server.config import ServerConfig
from enliven.server.http_guards import HttpError
from enliven.server.signalling import VIDEO_CODECS, check_offer_sdp, parse_offer

CORPUS = sorted((Path(__file__).resolve().parents[1] / "corpora" / "offers").glob("*.json"))


def test_the_corpus_is_there() -> None:
    names = {p.stem.split("-", 1)[0] for p in CORPUS}
    assert len(CORPUS) >= 15 and names == {"accept", "refuse"}


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_corpus_offer_in_process(path: Path) -> None:
    body = path.read_bytes()
    try:
        checked = check_offer_sdp(parse_offer(body), ServerConfig())
    except HttpError as e:
        assert path.stem.startswith("refuse-") and e.status == 400, f"{path.stem}: {e.status} {e.message}"
        return
    assert path.stem.startswith("accept-"), f"{path.stem} passed the checks"

    async def answer() -> str:  # what signalling.answer does with it, short of the network
        from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription

        pc = RTCPeerConnection()
        try:
            codecs = RTCRtpSender.getCapabilities("video").codecs
            pc.addTransceiver("video", direction="sendrecv").setCodecPreferences(
                [c for c in codecs if c.mimeType in VIDEO_CODECS])
            await pc.setRemoteDescription(RTCSessionDescription(sdp=checked.sdp, type="offer"))
            return (await pc.createAnswer()).sdp
        finally:
            await pc.close()

    assert asyncio.run(answer()).startswith("v=0")


@pytest.mark.slow
def test_corpus_against_the_server(server: Server) -> None:
    server.wait_idle()
    results = {}
    for path in CORPUS:
        with urllib.request.urlopen(urllib.request.Request(f"{server.base}/api/sessions", data=b"",
                                                           method="POST"), timeout=60) as r:
            created = json.loads(r.read())
        auth = {"Authorization": f"Bearer {created['token']}"}
        request = urllib.request.Request(f"{server.base}/api/sessions/{created['session_id']}/offer",
                                         data=path.read_bytes(), method="POST", headers=auth)
        try:
            with urllib.request.urlopen(request, timeout=60) as r:
                results[path.stem] = r.status
        except urllib.error.HTTPError as e:
            results[path.stem] = e.code
        urllib.request.urlopen(urllib.request.Request(
            f"{server.base}/api/sessions/{created['session_id']}", method="DELETE", headers=auth), timeout=30).close()
    for name, status in results.items():
        assert status == (400 if name.startswith("refuse-") else 200), (name, status)
    server.wait_idle()
