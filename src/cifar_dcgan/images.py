"""Image grids and line plots written as PNG files (matplotlib's Agg backend, no display)."""

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def to_unit(images: np.ndarray) -> np.ndarray:
    """Map tanh-range images [-1, 1] to [0, 1], the range image loggers expect; grey images
    (one channel) are repeated to RGB, which every image writer and viewer takes."""
    images = np.asarray(images, dtype=np.float32)
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    return np.clip((images + 1.0) / 2.0, 0.0, 1.0)


def tile(images: np.ndarray, columns: int = 7, pad: int = 2) -> np.ndarray:
    """(N, H, W, C) images in [-1, 1] -> one (rows*(H+pad)+pad, ..., C) grid in [0, 1]."""
    images = to_unit(images)
    n, h, w, c = images.shape
    rows = -(-n // columns)
    grid = np.ones((rows * (h + pad) + pad, columns * (w + pad) + pad, c), dtype=np.float32)
    for i, image in enumerate(images):
        top, left = pad + (i // columns) * (h + pad), pad + (i % columns) * (w + pad)
        grid[top : top + h, left : left + w] = image
    return grid


def save_grid(
    images: np.ndarray, path: Path, columns: int = 7, scale: int = 4, max_side: int = 2400
) -> np.ndarray:
    """Tile `images`, upscale each pixel `scale` times so 32x32 images are visible (less for
    large grids: at most `max_side` pixels a side), save PNG; returns the upscaled grid in
    [0, 1] (what the MLflow image chart shows full screen)."""
    grid = tile(images, columns)
    scale = max(1, min(scale, max_side // max(grid.shape[:2])))
    big = np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    plt.imsave(path, big)
    return big


def save_line_plot(
    path: Path, x: Sequence[float], series: dict[str, Sequence[float]], xlabel: str, ylabel: str, title: str
) -> None:
    """One figure with a line per series."""
    figure, axes = plt.subplots(figsize=(8, 4.5), dpi=100)
    for name, values in series.items():
        axes.plot(x, values, label=name, linewidth=1)
    save_figure(figure, axes, path, xlabel, ylabel, title)


def save_figure(figure, axes, path: Path, xlabel: str, ylabel: str, title: str) -> None:
    axes.set(xlabel=xlabel, ylabel=ylabel, title=title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
