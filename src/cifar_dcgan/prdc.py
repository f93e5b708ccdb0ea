"""Precision and recall (Kynkäänniemi et al., "Improved precision and recall metric for
assessing generative models", NeurIPS 2019) and density and coverage (Naeem et al.,
"Reliable fidelity and diversity metrics for generative models", ICML 2020) of generated
images' features against real ones.

FCD mixes two failures into one number. These separate them: precision and density ask
whether generated images fall where real ones are ("they look real"), recall and coverage
whether the real images are covered ("every kind appears"). A generator collapsed onto a
few good images keeps its precision and loses its recall and coverage.

Each point's neighbourhood is the ball reaching its k-th nearest other point of its own set;
"inside" is a strict `<`, as in the authors' reference code (clovaai/generative-evaluation-prdc).
Distances are computed `chunk` rows at a time, so memory stays at chunk x N whatever the set
sizes (10,000 x 10,000 points never build the full distance matrix).
"""

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from cifar_dcgan.errors import PipelineError


@dataclass(frozen=True)
class PRDC:
    precision: float  # share of generated points inside some real point's k_pr ball
    recall: float  # share of real points inside some generated point's k_pr ball
    density: float  # real k_dc balls holding each generated point, over k_dc; about 1 if equal
    coverage: float  # share of real points whose k_dc ball holds a generated point


def prdc(
    real: np.ndarray,
    fake: np.ndarray,
    k_pr: int = 3,
    k_dc: int = 5,
    chunk: int = 1024,
) -> PRDC:
    """The four metrics of (N, D) real and (M, D) generated features."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    _check(real, fake, k_pr, k_dc, chunk)
    real_pr, real_dc = _kth_neighbour_distances(real, (k_pr, k_dc), chunk)
    (fake_pr,) = _kth_neighbour_distances(fake, (k_pr,), chunk)
    precise = np.zeros(len(fake), bool)
    recalled = np.zeros(len(real), bool)
    holding = np.zeros(len(fake), np.int64)  # real k_dc balls around each generated point
    covered = np.zeros(len(real), bool)
    for rows, distances in _distances(real, fake, chunk):  # (chunk, M) at a time
        precise |= (distances < real_pr[rows, None]).any(axis=0)
        recalled[rows] = (distances < fake_pr[None, :]).any(axis=1)
        inside = distances < real_dc[rows, None]
        holding += inside.sum(axis=0)
        covered[rows] = inside.any(axis=1)
    return PRDC(
        precision=float(precise.mean()),
        recall=float(recalled.mean()),
        density=float(holding.sum() / (k_dc * len(fake))),
        coverage=float(covered.mean()),
    )


def _check(real: np.ndarray, fake: np.ndarray, k_pr: int, k_dc: int, chunk: int) -> None:
    """Refuse what would give a meaningless score, saying what to change."""
    if min(k_pr, k_dc, chunk) < 1:
        raise PipelineError(
            f"precision/recall: k_pr = {k_pr}, k_dc = {k_dc}, chunk = {chunk}: each must be >= 1"
        )
    for name, points in (("real", real), ("generated", fake)):
        if points.ndim != 2 or points.shape[1] == 0:
            raise PipelineError(
                f"precision/recall: {name} features have shape {points.shape}; "
                "pass one row of D > 0 features per image"
            )
    if real.shape[1] != fake.shape[1]:
        raise PipelineError(
            f"precision/recall: real features are {real.shape[1]} wide and generated ones "
            f"{fake.shape[1]}; they need the same width: embed both with the same judge"
        )
    # real points need k_dc-th neighbours too; generated ones only k_pr-th (for recall)
    for name, points, k in (("real", real, max(k_pr, k_dc)), ("generated", fake, k_pr)):
        if len(points) <= k:
            raise PipelineError(
                f"precision/recall: {len(points)} {name} points; a k-NN radius with "
                f"k = {k} needs more than k = {k} of them: score more images or lower k"
            )
    for name, points in (("real", real), ("generated", fake)):
        bad = int((~np.isfinite(points).all(axis=1)).sum())
        if bad:
            raise PipelineError(
                f"precision/recall: {bad} {name} feature rows hold NaN or infinity "
                "(a diverged generator or judge?); they cannot be scored"
            )


def _distances(a: np.ndarray, b: np.ndarray, chunk: int) -> Iterator[tuple[slice, np.ndarray]]:
    """Rows of `a`, `chunk` at a time, with their (rows, len(b)) Euclidean distances to `b`."""
    b_squared = np.einsum("ij,ij->i", b, b)
    for start in range(0, len(a), chunk):
        rows = slice(start, start + chunk)
        block = a[rows]
        # |x - y|^2 = |x|^2 + |y|^2 - 2 x.y, built in place: one (chunk, len(b)) array
        squared = block @ b.T
        squared *= -2.0
        squared += np.einsum("ij,ij->i", block, block)[:, None]
        squared += b_squared[None, :]
        np.maximum(squared, 0.0, out=squared)  # rounding can leave a tiny negative at distance 0
        yield rows, np.sqrt(squared, out=squared)


def _kth_neighbour_distances(points: np.ndarray, ks: tuple[int, ...], chunk: int) -> np.ndarray:
    """(len(ks), N): each point's distance to its k-th nearest other point, for each k."""
    radii = np.empty((len(ks), len(points)))
    for rows, distances in _distances(points, points, chunk):
        # column 0 of the partition is the point itself at distance 0, so column k is the k-th other
        radii[:, rows] = np.partition(distances, ks, axis=1)[:, list(ks)].T
    return radii
