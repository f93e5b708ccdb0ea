"""train_gan.diff_augment: each transform does what it says, lets G's gradient through, and
depends only on its seed. (One device vs two replicas: tests/test_distribute.py.)"""

import numpy as np
import pytest
import tensorflow as tf

from cifar_dcgan.augment import AUGMENTATIONS, augment

SEED = tf.constant([7, 11], tf.int64)


def images(n=8):
    return tf.constant(np.random.default_rng(0).uniform(-1, 1, (n, 32, 32, 3)).astype(np.float32))


@pytest.mark.parametrize("name", AUGMENTATIONS)
def test_each_transform_is_differentiable_and_changes_the_images(name):
    x = images()
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = augment(x, (name,), SEED)
        total = tf.reduce_sum(y * tf.cos(y))
    gradient = tape.gradient(total, x)
    assert gradient is not None and np.isfinite(gradient.numpy()).all()
    assert np.abs(gradient.numpy()).sum() > 0
    assert y.shape == x.shape and not np.allclose(y.numpy(), x.numpy())


def test_translation_moves_each_image_by_at_most_four_pixels():
    x = np.zeros((16, 32, 32, 3), np.float32)
    x[:, 16, 16, :] = 1.0  # one bright pixel in the middle
    y = augment(tf.constant(x), ("translation",), SEED).numpy()
    shifts = set()
    for image in y:
        rows, columns = np.nonzero(image[..., 0])
        assert len(rows) == 1 and np.all(image[rows[0], columns[0]] == 1.0)
        assert abs(rows[0] - 16) <= 4 and abs(columns[0] - 16) <= 4
        shifts.add((rows[0] - 16, columns[0] - 16))
    assert len(shifts) > 4  # each image its own shift


def test_cutout_zeroes_one_square_of_at_most_half_the_side():
    y = augment(tf.ones((16, 32, 32, 3)), ("cutout",), SEED).numpy()
    for image in y:
        rows, columns = np.nonzero(image[..., 0] == 0)
        assert 0 < len(rows) <= 16 * 16
        height, width = rows.max() - rows.min() + 1, columns.max() - columns.min() + 1
        assert height <= 16 and width <= 16 and len(rows) == height * width  # a full rectangle
        assert np.all(image[..., 1:][image[..., :1].repeat(2, -1) == 0] == 0)  # every channel


def test_the_draws_depend_on_the_seed_only_and_the_order_is_fixed():
    x = images()
    policy = ("color", "translation", "cutout")
    first = augment(x, policy, SEED).numpy()
    np.testing.assert_array_equal(first, augment(x, policy, SEED).numpy())
    np.testing.assert_array_equal(first, augment(x, policy[::-1], SEED).numpy())
    assert not np.array_equal(first, augment(x, policy, SEED + 1).numpy())
    np.testing.assert_array_equal(augment(x, (), SEED).numpy(), x.numpy())
