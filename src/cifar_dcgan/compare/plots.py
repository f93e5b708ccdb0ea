"""The comparison's pictures: FCD curves with their intervals as bands (`fcd_curves.png`) and
the last probe grid of one seed per group (`grids.png`)."""

import tempfile
import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib.image

from cifar_dcgan.compare.text import plain
from cifar_dcgan.images import plt, save_figure

ONE_PANEL = 4  # groups drawn in one FCD panel; more bands than this hide each other
LEGEND_WIDTH = 56  # characters of a legend line: a longer label wraps instead of leaving the figure

Band = tuple[Sequence[float], Sequence[float], Sequence, Sequence]  # x, y, low, high (None: unknown)


def plot_curves(result: dict, path: Path) -> list[list[str]]:
    """FCD per epoch: each group's mean over seeds, its 95% interval as a band. Up to
    `ONE_PANEL` groups share one panel; more get a panel each, over the baseline in grey.
    Returns the series of each panel, as drawn."""

    def at_least_0(values):  # FCD is never negative: a wide t-band stops at 0
        return [None if v is None else max(v, 0.0) for v in values]

    series = {
        f"{_drawn(g['short_label'])} ({len(g['seeds'])} seeds)": (
            g["curve"]["epoch"],
            g["curve"]["mean"],
            at_least_0(g["curve"]["low"]),
            g["curve"]["high"],
        )
        for g in result["groups"]
    }
    title = "FCD per snapshot: mean and 95% CI over seeds"
    if len(series) <= ONE_PANEL:
        save_band_plot(path, series, "epoch", "FCD (lower is better)", title)
        return [list(series)]
    baseline, *others = series.items()  # the baseline group comes first
    save_band_panels(path, baseline, dict(others), "epoch", "FCD (lower is better)", title)
    return [[baseline[0], name] for name, _ in others]


def plot_grids(result: dict, client, path: Path, columns: int = 5) -> None:
    """The last probe grid of one seed per group (the first that has one), `columns` a row."""
    groups = result["groups"]
    rows, columns = -(-len(groups) // columns), min(columns, len(groups))
    figure, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 4.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    with tempfile.TemporaryDirectory() as folder:
        for i, (ax, g) in enumerate(zip(axes.flat, groups)):
            for shown in g["runs"]:  # the first seed whose grid the store still has
                grid = _last_grid(client, shown["run_id"], Path(folder) / str(i))
                if grid is not None:
                    ax.imshow(matplotlib.image.imread(grid))
                    break
            else:
                shown = g["runs"][0]
                ax.text(0.5, 0.5, "no grid logged", ha="center", va="center")
            label = _drawn(textwrap.fill(g["short_label"], 40))
            seed = _drawn(plain(shown["seed"]))
            ax.set_title(
                f"{label}\nseed {seed}, FCD {shown['last_fcd']:.1f} (best {shown['best_fcd']:.1f})",
                fontsize=9,
            )
    figure.suptitle("Last snapshot's probe grid, one seed per group")
    figure.tight_layout(rect=(0, 0, 1, 0.93))  # the title above the groups' labels, however many lines
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)


def _drawn(text: str) -> str:
    """Text as matplotlib draws it literally: a pair of `$` would start math (and a bad formula
    fail the picture)."""
    return text.replace("$", r"\$")


def _last_grid(client, run_id: str, folder: Path) -> Path | None:
    """The run's last probe grid, downloaded into `folder`; None when the store lacks it."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        local = Path(client.download_artifacts(run_id, "grids", str(folder)))
    except Exception:  # a run tracked before grids were logged, or artifacts gone
        return None
    grids = sorted(local.glob("epoch_*.png"))
    return grids[-1] if grids else None


def save_band_plot(path: Path, series: dict[str, Band], xlabel: str, ylabel: str, title: str) -> None:
    """One line per series `name: (x, y, low, high)`, with a shaded band from low to high
    where both are known."""
    figure, axes = plt.subplots(figsize=(8, 4.5), dpi=100)
    for name, band in series.items():
        _band(axes, textwrap.fill(name, LEGEND_WIDTH), band)  # a long label would run off the figure
    save_figure(figure, axes, path, xlabel, ylabel, title)


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
