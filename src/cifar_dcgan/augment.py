"""Differentiable augmentation for D (`train_gan.diff_augment`), after DiffAugment (Zhao et
al. 2020, policy "color,translation,cutout"): every image D sees, real or generated, in D's
updates and in G's, is transformed the same way, and G's gradient flows through the
transform.

- `color`: brightness + U(-0.5, 0.5); saturation x U(0, 2) around the pixel's channel mean;
  contrast x U(0.5, 1.5) around the image's mean;
- `translation`: shift by up to 1/8 of the side (4 pixels) each way, filling with 0;
- `cutout`: zero a square of half the side at a random centre (clipped at the border).

Each image's parameters are drawn for the global batch from the step's stateless seed and
sliced per replica, as the step's other draws are: one device and several replicas
transform the same image the same way, and a resumed run draws what the uninterrupted one
would have. Applied in the order above, whatever the order of the list.
"""

import tensorflow as tf

from cifar_dcgan.replicas import replica_share, replicas

AUGMENTATIONS = ("color", "translation", "cutout")


def augment(images: tf.Tensor, policy: tuple[str, ...], seed: tf.Tensor) -> tf.Tensor:
    """`images` (this replica's rows of a global batch, in [-1, 1]) transformed by `policy`."""
    for number, name in enumerate(AUGMENTATIONS):
        if name in policy:
            images = TRANSFORMS[name](images, tf.random.experimental.stateless_fold_in(seed, number))
    return images


def _draw(images: tf.Tensor, seed: tf.Tensor, part: int, shape=(), low=0.0, high=1.0, dtype=tf.float32):
    """This replica's share of a (global rows, *shape) uniform draw."""
    rows = tf.shape(images)[0] * replicas()
    seed = tf.random.experimental.stateless_fold_in(seed, part)
    return replica_share(tf.random.stateless_uniform((rows, *shape), seed, low, high, dtype=dtype))


def color(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    one = (1, 1, 1)
    images = images + _draw(images, seed, 0, one, -0.5, 0.5)
    mean = tf.reduce_mean(images, axis=3, keepdims=True)
    images = (images - mean) * _draw(images, seed, 1, one, 0.0, 2.0) + mean
    mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
    return (images - mean) * _draw(images, seed, 2, one, 0.5, 1.5) + mean


def translation(images: tf.Tensor, seed: tf.Tensor, ratio: float = 0.125) -> tf.Tensor:
    side = images.shape[1]
    pad = int(side * ratio + 0.5)
    shifts = _draw(images, seed, 0, (2,), -pad, pad + 1, tf.int32)  # (B, 2): rows, columns
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    positions = tf.range(side)[None, :] + pad  # (1, side)
    rows = positions - shifts[:, :1]  # (B, side): padded row each output row reads
    columns = positions - shifts[:, 1:]
    images = tf.gather(padded, rows, axis=1, batch_dims=1)  # (B, side, side + 2 pad, C)
    return tf.gather(images, columns, axis=2, batch_dims=1)  # (B, side, side, C)


def cutout(images: tf.Tensor, seed: tf.Tensor, ratio: float = 0.5) -> tf.Tensor:
    side = images.shape[1]
    size = int(side * ratio + 0.5)
    centres = _draw(images, seed, 0, (2,), 0, side + (1 - size % 2), tf.int32)  # (B, 2)
    positions = tf.range(side)[None, :]  # (1, side)
    start = centres - size // 2  # (B, 2): first row and column of the square
    in_rows = (positions >= start[:, :1]) & (positions < start[:, :1] + size)  # (B, side)
    in_columns = (positions >= start[:, 1:]) & (positions < start[:, 1:] + size)
    square = in_rows[:, :, None] & in_columns[:, None, :]  # (B, side, side)
    return images * tf.cast(~square, images.dtype)[..., None]


TRANSFORMS = {"color": color, "translation": translation, "cutout": cutout}
