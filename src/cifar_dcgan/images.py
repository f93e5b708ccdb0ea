"""Image grids and line plots written as PNG files (matplotlib's Agg backend, no display)."""

import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def to_unit(images: np.ndarray) -> np.ndarray:
    """Map tanh-range images [-1, 1] to [0, 1], the range image loggers expect."""
    return np.clip((np.asarray(images, dtype=np.float32) + 1.0) / 2.0, 0.0, 1.0)


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
    _save(figure, axes, path, xlabel, ylabel, title)


Band = tuple[Sequence[float], Sequence[float], Sequence, Sequence]  # x, y, low, high (None: unknown)


def save_band_plot(path: Path, series: dict[str, Band], xlabel: str, ylabel: str, title: str) -> None:
    """One line per series `name: (x, y, low, high)`, with a shaded band from low to high
    where both are known."""
    figure, axes = plt.subplots(figsize=(8, 4.5), dpi=100)
    for name, band in series.items():
        _band(axes, name, band)
    _save(figure, axes, path, xlabel, ylabel, title)


def save_band_panels(
    path: Path,
    reference: tuple[str, Band],
    panels: dict[str, Band],
    xlabel: str,
    ylabel: str,
    title: str,
    columns: int = 3,
) -> None:
    """One panel per series, each drawn over the same `reference` series in grey: many bands
    in one axes hide each other. Shared axes, so panels compare at a glance."""
    rows = -(-len(panels) // columns)
    figure, grid = plt.subplots(
        rows, columns, figsize=(4.2 * columns, 3.4 * rows), dpi=100, sharex=True, sharey=True, squeeze=False
    )
    for axes, (name, band) in zip(grid.flat, panels.items()):
        _band(axes, reference[0], reference[1], color="0.45")
        _band(axes, name, band, color="C0")
        axes.set_title(textwrap.fill(name, 44), fontsize=9)
        axes.grid(alpha=0.3)
    for axes in grid.flat[len(panels) :]:
        axes.axis("off")
    for axes in grid[:, 0]:
        axes.set_ylabel(ylabel)
    for axes in grid[-1, :]:
        axes.set_xlabel(xlabel)
        axes.xaxis.set_tick_params(labelbottom=True)
    figure.suptitle(f"{title}\neach panel: the series named above it (blue) over {reference[0]} (grey)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)


def _band(axes, name: str, band: Band, color: str | None = None) -> None:
    x, y, low, high = band
    (line,) = axes.plot(x, y, marker="o", label=name, color=color)
    known = [i for i, (a, b) in enumerate(zip(low, high)) if a is not None and b is not None]
    if known:
        axes.fill_between(
            [x[i] for i in known],
            [low[i] for i in known],
            [high[i] for i in known],
            color=line.get_color(),
            alpha=0.2,
        )


def _save(figure, axes, path: Path, xlabel: str, ylabel: str, title: str) -> None:
    axes.set(xlabel=xlabel, ylabel=ylabel, title=title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
