"""train_gan.loss: each adversarial loss on known D outputs, and what D's output means under it."""

import numpy as np
import pytest
import tensorflow as tf

from cifar_dcgan.losses import LOSSES

OUTPUTS = tf.constant([[2.0], [0.5], [-1.0]])
REAL, FAKE = tf.ones((3, 1)), tf.zeros((3, 1))


def test_hinge_on_known_scores():
    hinge = LOSSES["hinge"]
    assert float(hinge.discriminator(REAL, OUTPUTS)) == pytest.approx((0 + 0.5 + 2) / 3)  # max(0, 1 - D)
    assert float(hinge.discriminator(FAKE, OUTPUTS)) == pytest.approx((3 + 1.5 + 0) / 3)  # max(0, 1 + D)
    assert float(hinge.generator(OUTPUTS)) == pytest.approx(-0.5)  # -mean D(G(z))
    assert (hinge.activation, hinge.threshold) == (None, 0.0)


def test_a_flipped_hinge_target_swaps_the_side():
    hinge = LOSSES["hinge"]
    mixed = tf.constant([[1.0], [0.0], [1.0]])
    expected = (max(0, 1 - 2) + max(0, 1 + 0.5) + max(0, 1 + 1)) / 3
    assert float(hinge.discriminator(mixed, OUTPUTS)) == pytest.approx(expected)


def test_least_squares_on_known_scores():
    squares = LOSSES["least_squares"]
    assert float(squares.discriminator(REAL, OUTPUTS)) == pytest.approx((1 + 0.25 + 4) / 3)
    assert float(squares.discriminator(FAKE, OUTPUTS)) == pytest.approx((4 + 0.25 + 1) / 3)
    assert float(squares.discriminator(REAL * 0.9, OUTPUTS)) == pytest.approx(
        ((2 - 0.9) ** 2 + (0.5 - 0.9) ** 2 + 1.9**2) / 3
    )  # smoothing moves the target
    assert float(squares.generator(OUTPUTS)) == pytest.approx((1 + 0.25 + 4) / 3)
    assert (squares.activation, squares.threshold) == (None, 0.5)


def test_bce_is_the_classic_cross_entropy_on_probabilities():
    bce = LOSSES["bce"]
    p = tf.constant([[0.9], [0.5], [0.2]])
    expected = -np.mean(np.log([0.9, 0.5, 0.2]))
    assert float(bce.discriminator(REAL, p)) == pytest.approx(expected, rel=1e-5)
    assert float(bce.generator(p)) == pytest.approx(expected, rel=1e-5)  # G: target 1 through D
    assert (bce.activation, bce.threshold) == ("sigmoid", 0.5)


def test_every_loss_says_what_its_numbers_mean():
    for name, loss in LOSSES.items():
        assert loss.name == name and all(word in loss.description for word in ("d1", "d2", "g:", "accuracy"))
        assert loss.note.startswith(f"train_gan.loss = {name}: D outputs")
