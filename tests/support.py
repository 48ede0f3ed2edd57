"""Small helpers shared by several test modules (independent computations, not library code)."""
import numpy as np


def box_cxcywh(mask: np.ndarray) -> list[float]:
    """Normalised (cx, cy, w, h) of a mask's inclusive pixel extent, computed naively."""
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    x1, x2, y1, y2 = xs.min(), xs.max(), ys.min(), ys.max()
    return [(x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h]
