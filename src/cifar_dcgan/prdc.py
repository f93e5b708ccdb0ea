"""Precision and recall (Kynkäänniemi et al., "Improved precision and recall metric for
assessing generative models", NeurIPS 2019) and density and coverage (Naeem et al.,
"Reliable fidelity and diversity metrics for generative models", ICML 2020) of generated
images' features against real ones.

FCD mixes two failures into one number. These separate them: precision and density ask
whether generated images fall where real ones are ("they look real"), recall and coverage
whether the real images are covered ("every kind appears"). A generator collapsed onto a
few good images keeps its precision and loses its recall and coverage.

Each point's neighbourhood is the ball reaching its k-th nearest neighbour in its own set;
"inside" is a strict `<`, as in the authors' reference code (clovaai/generative-evaluation-prdc).
Distances are computed in row chunks, so memory stays at chunk x N whatever the set sizes.
"""

from dataclasses import dataclass

import numpy as np

from cifar_dcgan.errors import PipelineError


@dataclass(frozen=True)
class PRDC:
    precision: float  # share of generated points inside some real point's k-NN ball
    recall: float  # share of real points inside some generated point's k-NN ball
    density: float  # real balls holding each generated point, over k; about 1 for equal sets
    coverage: float  # share of real points whose k-NN ball holds a generated point


def prdc(real: np.ndarray, fake: np.ndarray, k_pr: int = 3, k_dc: int = 5, chunk: int = 1024) -> PRDC:
    """The four metrics of (N, D) real and (M, D) generated features."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    _check(real, fake, max(k_pr, k_dc))
    real_radii = {k: _kth_neighbour_distance(real, k, chunk) for k in {k_pr, k_dc}}
    fake_radii = _kth_neighbour_distance(fake, k_pr, chunk)
    precise, covered_pr = np.zeros(len(fake), bool), np.zeros(len(real), bool)
    inside_count = np.zeros(len(fake))
    covered = np.zeros(len(real), bool)
    for start in range(0, len(real), chunk):
        stop = start + chunk
        distances = _distances(real[start:stop], fake)  # (chunk, M)
        precise |= (distances < real_radii[k_pr][start:stop, None]).any(axis=0)
        within_dc = distances < real_radii[k_dc][start:stop, None]
        inside_count += within_dc.sum(axis=0)
        covered[start:stop] = within_dc.any(axis=1)
        covered_pr[start:stop] = (distances < fake_radii[None, :]).any(axis=1)
    return PRDC(
        precision=float(precise.mean()),
        recall=float(covered_pr.mean()),
        density=float(inside_count.sum() / (k_dc * len(fake))),
        coverage=float(covered.mean()),
    )


def _check(real: np.ndarray, fake: np.ndarray, k: int) -> None:
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise PipelineError(
            f"precision/recall: real features {real.shape} and generated {fake.shape} must be "
            "(n, D) of the same width D; score both with the same judge"
        )
    if min(len(real), len(fake)) <= k:
        raise PipelineError(
            f"precision/recall: {len(real)} real and {len(fake)} generated points; each set needs "
            f"more than k = {k} (the neighbourhood size): score more images"
        )
    if not (np.isfinite(real).all() and np.isfinite(fake).all()):
        raise PipelineError(
            "precision/recall: the features hold NaN or infinity (a diverged generator?); "
            "they cannot be scored"
        )


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) Euclidean distances."""
    squared = (a**2).sum(axis=1)[:, None] + (b**2).sum(axis=1)[None, :] - 2 * a @ b.T
    return np.sqrt(np.clip(squared, 0, None))


def _kth_neighbour_distance(points: np.ndarray, k: int, chunk: int) -> np.ndarray:
    """Each point's distance to its k-th nearest other point."""
    radii = np.empty(len(points))
    for start in range(0, len(points), chunk):
        distances = _distances(points[start : start + chunk], points)
        # column k: index 0 of the partition is the point itself, at distance 0
        radii[start : start + chunk] = np.partition(distances, k, axis=1)[:, k]
    return radii
