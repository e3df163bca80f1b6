"""Frame numbers drawn into frames as a block barcode (16x16-pixel blocks in the top 16 rows, which survive
VP8): the loopback client stamps the webcam frames it sends, and a server started with
``--echo-frame-ids`` copies them into (or, for face points, draws the points' frame id into) its output,
so the client can tell which of its frames each animated frame was made from."""
from __future__ import annotations

import numpy as np

ID_BITS = 12  # frame numbers are sent modulo 2**12
ID_BLOCK_PX = 16
_GUARDS = (1, 0)  # two blocks after the id: white, black (a frame without them carries no id)


def stamp_id(image: np.ndarray, frame_id: int) -> None:
    """Draw ``frame_id % 2**ID_BITS`` as a barcode into the top rows of ``image`` ((H, W, 3) uint8), in place."""
    bits = [(frame_id >> i) & 1 for i in range(ID_BITS)] + list(_GUARDS)
    b = ID_BLOCK_PX
    for i, bit in enumerate(bits):
        image[:b, i * b:(i + 1) * b] = 255 if bit else 0


def read_id(image: np.ndarray) -> int | None:
    """The frame id stamped by ``stamp_id`` into ``image``, or None if there is none.

    ``image``: (H, W, 3) uint8 RGB, or (H, W) uint8 luma (a decoded frame's Y plane, where the blocks
    are about 16 and 235: no conversion to RGB needed); only its top ID_BLOCK_PX rows are read.
    """
    b = ID_BLOCK_PX
    n = ID_BITS + len(_GUARDS)
    if image.shape[0] < b or image.shape[1] < n * b:
        return None
    rows = image[b // 4:b - b // 4, :n * b].astype(np.float32)
    strip = rows.mean(axis=(0, 2) if rows.ndim == 3 else 0)  # (n * b,)
    levels = strip.reshape(n, b)[:, b // 4:b - b // 4].mean(axis=1)
    bits = levels > 127
    if any(abs(float(v) - 127) < 40 for v in levels) or tuple(int(x) for x in bits[ID_BITS:]) != _GUARDS:
        return None
    return int(sum(int(bit) << i for i, bit in enumerate(bits[:ID_BITS])))
