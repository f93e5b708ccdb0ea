"""Precision, recall, density and coverage on point sets whose answers are known."""

import numpy as np
import pytest

from cifar_dcgan.errors import PipelineError
from cifar_dcgan.prdc import prdc

RNG = np.random.default_rng(0)
REAL = RNG.standard_normal((500, 8))


def test_identical_sets_score_perfectly():
    scores = prdc(REAL, REAL.copy())
    assert scores.precision == scores.recall == scores.coverage == 1.0
    assert 0.9 < scores.density < 1.3  # about 1: each point sits in about k balls of k-NN radius


def test_a_collapsed_generator_looks_real_but_covers_nothing():
    fake = REAL[0] + 0.01 * RNG.standard_normal((500, 8))  # every image near one real image
    scores = prdc(REAL, fake)
    assert scores.precision > 0.9
    assert scores.recall < 0.05 and scores.coverage < 0.05


def test_far_shifted_sets_score_zero_and_a_small_shift_scores_in_between():
    far = prdc(REAL, REAL + 50.0)
    assert far.precision == far.recall == far.density == far.coverage == 0.0
    near = [prdc(REAL, RNG.standard_normal((500, 8)) + shift) for shift in (0.0, 0.5, 1.5)]
    precisions = [s.precision for s in near]
    assert 1.0 >= precisions[0] > precisions[1] > precisions[2] > 0.0
    assert near[0].coverage > near[2].coverage


def test_the_chunk_size_changes_nothing():
    fake = RNG.standard_normal((300, 8)) + 0.3
    assert prdc(REAL, fake, chunk=7) == prdc(REAL, fake, chunk=10_000)


def test_reference_values_of_a_hand_checked_case():
    """1-d points 0..9 against 0.5..9.5 with k = 1: every real radius is 1, so each fake point
    but 9.5 is strictly inside two real balls (density 19 / 10), and every ball holds one."""
    real = np.arange(10.0)[:, None]
    fake = real + 0.5
    scores = prdc(real, fake, k_pr=1, k_dc=1)
    assert (scores.precision, scores.recall, scores.density, scores.coverage) == (1.0, 1.0, 1.9, 1.0)


@pytest.mark.parametrize(
    "real, fake, says",
    [
        (REAL, RNG.standard_normal((50, 4)), "same width"),
        (REAL, REAL[:5], "more than k = 5"),
        (REAL, np.full((50, 8), np.nan), "NaN"),
    ],
)
def test_bad_input_is_refused_with_what_to_do(real, fake, says):
    with pytest.raises(PipelineError, match=says):
        prdc(real, fake)
