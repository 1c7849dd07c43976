"""A visible frame counter that survives lossy coding, scaling and range conversion.

Reference clips carry their source frame index in a row of 16 black/white cells
along the top of the picture (12 bits of index, 4 bits of check), plus the
number drawn as text for humans. Tests read the cells back from frames decoded
out of a DICOM file to prove which source frame landed at which output time.
"""

from __future__ import annotations

import numpy as np

CELLS = 16
INDEX_BITS = 12
BAND_FRACTION = 0.12  # the code band is the top 12 % of the picture


def _word(index: int) -> int:
    if not 0 <= index < 1 << INDEX_BITS:
        raise ValueError(f"frame index {index} does not fit in {INDEX_BITS} bits")
    check = bin(index).count("1") & 0xF
    return index | (check << INDEX_BITS)


def draw(luma: np.ndarray, index: int, black: int = 16, white: int = 235) -> None:
    """Paint the code for `index` into the top band of a luma plane, in place."""
    height, width = luma.shape
    band = max(4, int(height * BAND_FRACTION))
    word = _word(index)
    for bit in range(CELLS):
        x0 = bit * width // CELLS
        x1 = (bit + 1) * width // CELLS
        luma[:band, x0:x1] = white if (word >> bit) & 1 else black


def read(luma: np.ndarray) -> int | None:
    """Read the index back from a luma plane; None when the check bits disagree."""
    height, width = luma.shape
    band = max(4, int(height * BAND_FRACTION))
    y0, y1 = band // 4, band - band // 4
    word = 0
    for bit in range(CELLS):
        x0 = bit * width // CELLS
        x1 = (bit + 1) * width // CELLS
        margin = max(1, (x1 - x0) // 4)
        cell = luma[y0:y1, x0 + margin : x1 - margin]
        if float(cell.mean()) > 125.0:
            word |= 1 << bit
    index = word & ((1 << INDEX_BITS) - 1)
    if (word >> INDEX_BITS) != (bin(index).count("1") & 0xF):
        return None
    return index
