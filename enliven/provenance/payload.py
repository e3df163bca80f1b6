"""The watermark's payload: brand, format version and session id -> CRC -> convolutional code.

Layout of the 60 payload bits (most significant bit first):

    version (4) | session id (40) | CRC-16 (16)

The CRC (CRC-16/CCITT-FALSE) is computed over ``BRAND`` followed by the version and session id,
so a bit string only checks if it was made for enliven: the brand costs no payload bits, and
a decoder that recovers noise fails the check except once in 65,536 tries. The 60 bits are
then coded with the standard K=7, rate 1/2 convolutional code (generators 133 and 171 octal,
six zero tail bits): 132 coded bits, decoded by a soft-decision Viterbi decoder.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass

import numpy as np

from enliven.engine.errors import ShapeError

BRAND = b"enliven"  # what the CRC is seeded with: the payload is enliven's without spending bits on it
FORMAT_VERSION = 1  # of this payload layout and the watermark that carries it
VERSION_BITS = 4
SESSION_ID_BITS = 32  # random per session (never derived from the photo or the person)
CRC_BITS = 16
PAYLOAD_BITS = VERSION_BITS + SESSION_ID_BITS + CRC_BITS  # 60
CONSTRAINT_LENGTH = 7
_GENERATORS = (0o133, 0o171)
CODED_BITS = len(_GENERATORS) * (PAYLOAD_BITS + CONSTRAINT_LENGTH - 1)  # 132


@dataclass(frozen=True)
class Payload:
    """What an enliven watermark says: made by enliven, in this format, during this session."""

    session_id: int  # SESSION_ID_BITS random bits, the same for every frame of one session or file
    version: int = FORMAT_VERSION  # VERSION_BITS

    def __post_init__(self) -> None:
        if not 0 <= self.session_id < 1 << SESSION_ID_BITS:
            raise ValueError(f"session_id must fit in {SESSION_ID_BITS} bits; got {self.session_id}")
        if not 0 <= self.version < 1 << VERSION_BITS:
            raise ValueError(f"version must fit in {VERSION_BITS} bits; got {self.version}")

    @property
    def brand(self) -> str:
        return BRAND.decode()

    @property
    def session_hex(self) -> str:
        return f"{self.session_id:0{SESSION_ID_BITS // 4}x}"

    def __str__(self) -> str:
        return f"{self.brand} v{self.version} session {self.session_hex}"

    def to_bits(self) -> np.ndarray:
        """(PAYLOAD_BITS,) uint8 in {0, 1}: version, session id, CRC."""
        data = _int_bits(self.version, VERSION_BITS) + _int_bits(self.session_id, SESSION_ID_BITS)
        return np.array(data + _int_bits(crc16(data), CRC_BITS), np.uint8)

    @classmethod
    def from_bits(cls, bits: np.ndarray) -> Payload | None:
        """The payload of (PAYLOAD_BITS,) bits, or None when their CRC does not check."""
        b = [int(x) for x in np.asarray(bits).reshape(-1)]
        if len(b) != PAYLOAD_BITS:
            raise ShapeError(f"expected {PAYLOAD_BITS} bits; got {len(b)}")
        data, crc = b[:-CRC_BITS], b[-CRC_BITS:]
        if crc16(data) != _bits_int(crc):
            return None
        return cls(session_id=_bits_int(data[VERSION_BITS:]), version=_bits_int(data[:VERSION_BITS]))


def new_session_id() -> int:
    """A fresh random session id (from the OS's CSPRNG)."""
    return secrets.randbits(SESSION_ID_BITS)


def _int_bits(value: int, n: int) -> list[int]:
    return [(value >> (n - 1 - i)) & 1 for i in range(n)]


def _bits_int(bits: list[int]) -> int:
    value = 0
    for b in bits:
        value = (value << 1) | b
    return value


def crc16(bits: list[int]) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) of BRAND's bytes followed by ``bits``."""
    crc = 0xFFFF

    def feed(bit: int) -> None:
        nonlocal crc
        top = (crc >> 15) & 1
        crc = (crc << 1) & 0xFFFF
        if top ^ bit:
            crc ^= 0x1021

    for byte in BRAND:
        for i in range(8):
            feed((byte >> (7 - i)) & 1)
    for bit in bits:
        feed(bit)
    return crc


def _parity(x: np.ndarray | int) -> np.ndarray:
    x = np.asarray(x)
    out = np.zeros(x.shape, np.uint8)
    while np.any(x):
        out ^= (x & 1).astype(np.uint8)
        x = x >> 1
    return out


_STATES = 1 << (CONSTRAINT_LENGTH - 1)  # 64
# For state s (the last K-1 input bits, newest in the high bit) and input bit b: the register
# (b, s) and its two output bits.
_REGISTER = np.array([[(b << (CONSTRAINT_LENGTH - 1)) | s for b in (0, 1)] for s in range(_STATES)])
_OUTPUTS = np.stack([_parity(_REGISTER & g) for g in _GENERATORS], axis=-1)  # (64, 2 inputs, 2) uint8
_NEXT = _REGISTER >> 1  # (64, 2) next state


def conv_encode(bits: np.ndarray) -> np.ndarray:
    """(n,) bits {0, 1} -> (2 (n + 6),) uint8 coded bits (zero-terminated)."""
    state = 0
    out: list[int] = []
    for b in [int(x) for x in np.asarray(bits).reshape(-1)] + [0] * (CONSTRAINT_LENGTH - 1):
        out.extend(int(v) for v in _OUTPUTS[state, b])
        state = int(_NEXT[state, b])
    return np.array(out, np.uint8)


def viterbi_decode(soft: np.ndarray) -> np.ndarray:
    """Soft-decision Viterbi decoding of conv_encode's output.

    Args: soft (2 (n + 6),) float: > 0 means a coded 1, < 0 a coded 0, magnitude = reliability.
    Returns: (n,) uint8 bits, the zero-terminated path of greatest correlation with ``soft``.
    """
    soft = np.asarray(soft, np.float64).reshape(-1, len(_GENERATORS))
    signs = 2.0 * _OUTPUTS.astype(np.float64) - 1.0  # (64, 2, 2)
    metric = np.full(_STATES, -np.inf)
    metric[0] = 0.0
    back = np.zeros((len(soft), _STATES), np.int64)  # best predecessor register of each state
    prev_state = np.repeat(np.arange(_STATES), 2)  # candidates: (state, input) flattened
    next_state = _NEXT.reshape(-1)
    for t, pair in enumerate(soft):
        cand = (metric[:, None] + signs @ pair).reshape(-1)  # (128,)
        best = np.full(_STATES, -np.inf)
        arg = np.zeros(_STATES, np.int64)
        order = np.argsort(cand, kind="stable")  # ascending: the last write per state wins
        best[next_state[order]] = cand[order]
        arg[next_state[order]] = order
        metric, back[t] = best, arg
    state = 0  # zero-terminated
    bits = []
    for t in range(len(soft) - 1, -1, -1):
        k = back[t, state]
        bits.append(int(k % 2))
        state = int(prev_state[k])
    bits.reverse()
    return np.array(bits[: len(soft) - (CONSTRAINT_LENGTH - 1)], np.uint8)
