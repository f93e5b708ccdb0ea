"""Precision, recall, density and coverage on point sets whose answers are known."""

import tracemalloc

import numpy as np
import pytest

from cifar_dcgan.errors import PipelineError
from cifar_dcgan.prdc import PRDC, prdc

REAL = np.random.default_rng(0).standard_normal((500, 8))


def gaussian(n: int, seed: int, width: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, width))


def test_identical_sets_score_perfectly():
    scores = prdc(REAL, REAL.copy())
    assert scores.precision == scores.recall == scores.coverage == 1.0
    # each point sits in its own ball and in those of the k - 1 points strictly nearer: k in all
    assert scores.density == pytest.approx(1.0, abs=0.01)


def test_a_collapsed_generator_looks_real_but_covers_nothing():
    fake = REAL[0] + 0.01 * gaussian(500, seed=1)  # every image near one real image
    scores = prdc(REAL, fake)
    assert scores.precision > 0.9
    assert scores.recall < 0.05 and scores.coverage < 0.05


def test_far_shifted_sets_score_zero():
    assert prdc(REAL, REAL + 50.0) == PRDC(precision=0.0, recall=0.0, density=0.0, coverage=0.0)


def test_a_bigger_shift_scores_lower_and_a_small_one_in_between():
    fake = gaussian(500, seed=2)  # the same sample shifted further each time
    shifted = [prdc(REAL, fake + shift) for shift in (0.0, 0.5, 1.0, 2.0)]
    for metric in ("precision", "recall", "density", "coverage"):
        values = [getattr(scores, metric) for scores in shifted]
        assert values == sorted(values, reverse=True) and values[0] > values[-1], metric
    small = shifted[1]
    assert 0.0 < small.precision < 1.0 and 0.0 < small.recall < 1.0
    assert 0.0 < small.density < 1.0 and 0.0 < small.coverage < 1.0


def test_the_chunk_size_changes_nothing():
    fake = gaussian(300, seed=3) + 0.3
    assert prdc(REAL, fake, chunk=7) == prdc(REAL, fake, chunk=10_000)
    assert prdc(REAL, fake, k_pr=2, k_dc=7, chunk=64) == prdc(REAL, fake, k_pr=2, k_dc=7)


def test_memory_stays_at_a_chunk_of_rows():
    real, fake = gaussian(2000, seed=4), gaussian(2000, seed=5)
    tracemalloc.start()
    try:
        prdc(real, fake, chunk=100)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2000 * 2000 * 8 / 4  # a quarter of one full float64 distance matrix


def test_a_hand_checked_case():
    """1-d points 0..9 against 0.5..9.5 with k = 1: every real radius is 1, so each generated
    point but 9.5 is strictly inside two real balls (density 19 / 10), and every ball holds one."""
    real = np.arange(10.0)[:, None]
    scores = prdc(real, real + 0.5, k_pr=1, k_dc=1)
    assert scores == PRDC(precision=1.0, recall=1.0, density=1.9, coverage=1.0)


def test_touching_a_radius_is_outside():
    """Points 0, 1, 2 with k = 1 have radius 1: a generated point at exactly 3 is outside all."""
    real = np.array([[0.0], [1.0], [2.0]])
    assert prdc(real, np.array([[3.0], [4.0]]), k_pr=1, k_dc=1).precision == 0.0


@pytest.mark.parametrize(
    "real, fake, says",
    [
        (REAL, gaussian(50, seed=6, width=4), "8 wide and generated ones 4"),
        (REAL, REAL[:3], "3 generated points"),
        (REAL[:5], REAL, "5 real points"),
        (REAL, np.full((50, 8), np.nan), "50 generated feature rows hold NaN"),
        (np.where(np.arange(500)[:, None] == 7, np.inf, REAL), REAL, "1 real feature rows"),
        (REAL, REAL[:, 0], "generated features have shape"),
    ],
)
def test_bad_input_is_refused_saying_what_is_wrong(real, fake, says):
    with pytest.raises(PipelineError, match=says):
        prdc(real, fake)


def test_a_zero_neighbourhood_is_refused():
    with pytest.raises(PipelineError, match="k_pr = 0"):
        prdc(REAL, REAL, k_pr=0)
