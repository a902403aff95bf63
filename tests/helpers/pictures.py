"""The picture and mask the server's and the MCP tools' tests edit (their conftests import these fixtures)."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def picture() -> np.ndarray:
    """32x32: a blue background with a red square."""
    array = np.zeros((32, 32, 3), np.uint8)
    array[:] = (30, 60, 200)
    array[8:24, 8:24] = (220, 30, 30)
    return array


@pytest.fixture
def square_mask() -> np.ndarray:
    """White (repaint) over the top-left quarter of the 32x32 picture."""
    mask = np.zeros((32, 32), np.uint8)
    mask[4:16, 4:16] = 255
    return mask
