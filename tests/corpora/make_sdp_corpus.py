"""Writes the signalling regression corpus (tests/corpora/offers/) from valid.sdp, an offer aiortc made
(video + microphone + data channel). Each file is an offer's request body; its name says what the server
must answer: ``refuse-*`` 400, ``accept-*`` an answer. Every input that once made the server fail
(a 500, an exception inside aiortc, a section smuggled past the checks) is kept here and replayed by
tests/server/test_server_corpus.py.

Run: ``python tests/corpora/make_sdp_corpus.py`` (rewrites the offers; valid.sdp is kept).
"""
from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "offers"


def main() -> None:
    valid = (HERE / "valid.sdp").read_bytes().decode()  # CRLF kept
    lines = valid.split("\r\n")
    video = valid[valid.index("m=video"):valid.index("m=audio")].replace("a=mid:0", "a=mid:7")
    app = valid[valid.index("m=application"):]

    def drop(prefix: str, sdp: str = valid) -> str:
        return "\r\n".join(line for line in sdp.split("\r\n") if not line.startswith(prefix))

    offers: dict[str, str | bytes] = {
        # found by review: a line regex missed these sections, aiortc's parser (splitlines) sees them
        "refuse-video-after-lone-cr": valid + "a=x:1\r" + video.replace("\r\n", "\r"),
        "refuse-video-after-u2028": valid + "a=x:1\u2028" + video.replace("\r\n", "\u2028"),
        "refuse-video-after-nel": valid + "a=x:1\x85" + video.replace("\r\n", "\x85"),
        "refuse-video-after-file-separator": valid + "a=x:1\x1c" + video.replace("\r\n", "\x1c"),
        # found by the line-removal test: an exception inside aiortc's setRemoteDescription (AttributeError)
        "refuse-bundle-names-a-missing-section": valid.replace(valid[valid.index("m=video"):valid.index("m=audio")],
                                                               ""),
        # aiortc 1.16 fails on a section without a mid
        "refuse-section-without-mid": valid.replace("a=mid:2\r\n", ""),
        # StopIteration inside aiortc's parser: an fmtp for a payload type with no rtpmap
        "refuse-fmtp-without-rtpmap": drop("a=rtpmap:99"),
        # review: sha-1 / sha-224 were accepted although the message said sha-256/384/512
        "refuse-sha-1-fingerprint": "\r\n".join(
            "a=fingerprint:sha-1 " + ":".join(["AB"] * 20) if line.startswith("a=fingerprint:") else line
            for line in lines),
        "refuse-two-data-channels": valid + app.replace("a=mid:2", "a=mid:9"),
        "refuse-40-candidates": valid.replace(
            "a=end-of-candidates", "a=candidate:1 1 udp 1 127.0.0.1 9 typ host\r\n" * 40 + "a=end-of-candidates", 1),
        # a candidate line aiortc ignores (session level) and one it refuses to parse
        "accept-session-level-junk-candidate": valid.replace("a=msid-semantic", "a=candidate:junk\r\na=candidate:1 1 udp 1 "
                                                             "8.8.8.8 9 typ host\r\na=msid-semantic"),
        "accept-candidates-outside-the-networks": valid.replace(
            "a=end-of-candidates", "a=candidate:9 1 udp 1 8.8.8.8 9 typ host\r\na=candidate:8 1 udp 1 "
            "abcd-1234.local 9 typ host\r\na=end-of-candidates", 1),
        "accept-valid": valid,
        "accept-without-microphone": valid.replace(valid[valid.index("m=audio"):valid.index("m=application")], "")
        .replace("BUNDLE 0 1 2", "BUNDLE 0 2"),
    }
    bodies: dict[str, bytes] = {name: json.dumps({"type": "offer", "sdp": sdp}).encode() for name, sdp in offers.items()}
    # JSON envelopes that once reached the server's catch-all (a 500): RecursionError in json.loads
    bodies["refuse-json-nested-5000-deep"] = b"[" * 5000 + b"]" * 5000
    bodies["refuse-json-sdp-nested"] = b'{"type": "offer", "sdp": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    bodies["refuse-json-nan-sdp"] = b'{"type": "offer", "sdp": NaN}'
    OUT.mkdir(exist_ok=True)
    for old in OUT.glob("*.json"):
        old.unlink()
    for name, body in bodies.items():
        (OUT / f"{name}.json").write_bytes(body)
    print(f"wrote {len(bodies)} offers to {OUT}")


if __name__ == "__main__":
    main()
