"""The DCGAN's two networks, built from the `model` section of params.yaml for the image
shape `prepare` wrote.

Defaults reproduce the classic Keras DCGAN for CIFAR-10:
- discriminator: Conv2D 64 3x3 same, then Conv2D 128, 128, 256 3x3 stride 2, LeakyReLU 0.2
  after each, Flatten, Dropout 0.4 (BatchDropout, see below), Dense 1 sigmoid;
- generator: Dense 4x4x256 + LeakyReLU, three Conv2DTranspose 128 4x4 stride 2 +
  LeakyReLU, Conv2D 3 3x3 tanh.
The recipes in `recipes/` (the Keras MNIST DCGAN, the 128 px cat-face DCGAN) are other
settings of the same keys: per-layer strides, batch norm placement, the output layer.
"""

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from cifar_dcgan.config.model import ModelParams
from cifar_dcgan.kernels import fast_kernels
from cifar_dcgan.machine import resolve_precision
from cifar_dcgan.replicas import replica_share, replicas


@keras.saving.register_keras_serializable(package="cifar_dcgan")
class BatchDropout(layers.Layer):
    """Dropout whose masks are drawn for the global batch and sliced per replica, so under a
    tf.distribute strategy every image gets the mask it would get on one device (with
    Keras' Dropout every replica would draw the same masks for its own rows)."""

    def __init__(self, rate: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.rate, self.seed = rate, seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=False):
        if not training or self.rate == 0:
            return inputs
        shape = tf.concat([tf.shape(inputs)[:1] * replicas(), tf.shape(inputs)[1:]], axis=0)
        keep = replica_share(keras.random.uniform(shape, seed=self.seed_generator)) >= self.rate
        return tf.where(keep, inputs / (1.0 - self.rate), tf.zeros_like(inputs))

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


def _initializer(params: ModelParams, seed: int):
    if params.init == "normal":
        return keras.initializers.RandomNormal(mean=0.0, stddev=0.02, seed=seed)
    if params.init == "truncated_normal":
        return keras.initializers.TruncatedNormal(mean=0.0, stddev=0.02, seed=seed)
    return keras.initializers.GlorotUniform(seed=seed)


def build_discriminator(
    params: ModelParams,
    seed: int,
    activation: str | None = "sigmoid",
    *,
    image_shape: tuple[int, int, int],
) -> keras.Model:
    """(B, H, W, C) images in [-1, 1] -> (B, 1) probability that each is real (or with
    `activation` None a score: see cifar_dcgan.losses)."""
    init = lambda i: _initializer(params, seed + i)  # noqa: E731 - a distinct seed per layer

    def normalized(layer: layers.Layer, **kwargs) -> layers.Layer:
        """`layer`, spectrally normalized with model.d_spectral_norm (one power iteration per
        training call; its vector is a non-trainable weight, kept in checkpoints)."""
        return layers.SpectralNormalization(layer, **kwargs) if params.d_spectral_norm else layer

    inputs = keras.Input(image_shape)
    x = inputs
    for i, (filters, stride) in enumerate(zip(params.d_filters, params.strides)):
        x = normalized(
            layers.Conv2D(
                filters, params.d_kernel, strides=stride, padding="same", kernel_initializer=init(i)
            )
        )(x)  # (B, H / stride so far, W / ..., filters): 32 -> 32, 16, 8, 4 by default
        if params.d_batch_norm and (i > 0 or params.d_batch_norm_first):
            x = layers.BatchNormalization(synchronized=True)(x)
        x = layers.LeakyReLU(negative_slope=params.leaky_slope)(x)
    x = layers.Flatten()(x)  # (B, 4 * 4 * 256) by default
    if params.d_dropout > 0:
        x = BatchDropout(params.d_dropout, seed=seed)(x)
    # float32 output even under mixed precision: a bf16 sigmoid rounds to 0.5 at init
    outputs = normalized(
        layers.Dense(
            1, activation=activation, dtype="float32", kernel_initializer=init(len(params.d_filters))
        ),
        dtype="float32",
    )(x)  # (B, 1)
    return fast_kernels(keras.Model(inputs, outputs, name="discriminator"))


def build_generator(
    params: ModelParams, latent_dim: int, seed: int, *, image_shape: tuple[int, int, int]
) -> keras.Model:
    """(B, latent_dim) latent points -> (B, H, W, C) images in [-1, 1]."""
    init = lambda i: _initializer(params, seed + 100 + i)  # noqa: E731
    side = params.check_shape(image_shape, latent_dim)  # 4 for 32 px and three upsampling blocks
    seed_shape = (side, side, params.g_seed_filters)

    def activate(x, batch_norm: bool):
        """LeakyReLU with batch norm before it (or after, g_batch_norm_after_activation)."""
        after = params.g_batch_norm_after_activation
        if batch_norm and not after:
            x = layers.BatchNormalization(synchronized=True)(x)
        x = layers.LeakyReLU(negative_slope=params.leaky_slope)(x)
        return layers.BatchNormalization(synchronized=True)(x) if batch_norm and after else x

    inputs = keras.Input((latent_dim,))
    x = layers.Dense(side * side * params.g_seed_filters, kernel_initializer=init(0))(inputs)
    dense_norm = params.g_batch_norm and params.g_batch_norm_dense
    if params.g_batch_norm_after_activation:  # batch norm per channel of the seed, as the Keras MNIST DCGAN
        x = activate(layers.Reshape(seed_shape)(x), dense_norm)
    else:
        x = layers.Reshape(seed_shape)(activate(x, dense_norm))  # (B, 4, 4, 256) by default
    for i, filters in enumerate(params.g_filters, start=1):
        x = _upsample(x, params.g_upsampling, filters, params.g_kernel, init(i))
        x = activate(x, params.g_batch_norm)  # (B, side * 2^i, side * 2^i, filters)
    last = init(len(params.g_filters) + 1)
    if params.g_output == "upsample_conv":
        x = layers.UpSampling2D(2)(x)
    output_layer = layers.Conv2DTranspose if params.g_output == "conv_transpose" else layers.Conv2D
    outputs = output_layer(
        image_shape[2],
        params.g_output_kernel,
        padding="same",
        activation="tanh",
        dtype="float32",
        kernel_initializer=last,
    )(x)  # (B, H, W, C)
    return fast_kernels(keras.Model(inputs, outputs, name="generator"))


def _upsample(x, kind: str, filters: int, kernel: int, initializer):
    """`x` at twice the side: a stride-2 transposed conv, or nearest upsampling and a conv."""
    if kind == "conv_transpose":
        return layers.Conv2DTranspose(
            filters, kernel, strides=2, padding="same", kernel_initializer=initializer
        )(x)
    x = layers.UpSampling2D(2)(x)
    return layers.Conv2D(filters, kernel, padding="same", kernel_initializer=initializer)(x)


def latent_points(rng: np.random.Generator, n: int, dim: int, distribution: str) -> np.ndarray:
    """(n, dim) float32 latent points from numpy (outside the training step's RNG):
    gaussian N(0, 1) or uniform U(-1, 1), as `train_gan.latent_distribution` says."""
    if distribution == "uniform":
        return rng.uniform(-1.0, 1.0, (n, dim)).astype(np.float32)
    return rng.standard_normal((n, dim)).astype(np.float32)


def load_model(path: Path, safe_mode: bool = True) -> keras.Model:
    """A saved model as `keras.models.load_model` gives it, with the kernels the training used
    (`fast_kernels`: bf16 summed as it did)."""
    return fast_kernels(keras.models.load_model(path, safe_mode=safe_mode))


def adam(learning_rate: float, beta1: float, precision: str = "float32") -> keras.optimizers.Optimizer:
    """Adam; under mixed_float16 wrapped in dynamic loss scaling, which float16 needs."""
    optimizer = keras.optimizers.Adam(learning_rate=learning_rate, beta_1=beta1)
    if resolve_precision(precision) == "mixed_float16":
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
