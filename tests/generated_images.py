"""Small generated images for tests that run without the real sample.

A plain module (not a conftest) so that test files in any folder can import it.
"""
from __future__ import annotations

from pathlib import Path


def write_generated_images(root: Path, per_label: int = 6, labels=("apple red", "banana", "kiwi")) -> list[Path]:
    """Small, distinct RGB JPEGs under root/<label>/ (labels with spaces on purpose)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(7)
    paths = []
    for li, label in enumerate(labels):
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_label):
            base = np.zeros((100, 100, 3), dtype=np.uint8)
            base[..., li % 3] = 180
            noise = rng.integers(0, 60, size=(100, 100, 3), dtype=np.uint8)
            path = folder / f"img_{i:03d}.jpg"
            Image.fromarray(base + noise).save(path, quality=90)
            paths.append(path)
    return paths
