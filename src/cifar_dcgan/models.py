"""The DCGAN's two networks, built from the `model` section of params.yaml.

Defaults reproduce the classic Keras DCGAN for CIFAR-10:
- discriminator: Conv2D 64 3x3 same, then Conv2D 128, 128, 256 3x3 stride 2, LeakyReLU 0.2
  after each, Flatten, Dropout 0.4 (BatchDropout, see below), Dense 1 sigmoid;
- generator: Dense 4x4x256 + LeakyReLU, three Conv2DTranspose 128 4x4 stride 2 +
  LeakyReLU, Conv2D 3 3x3 tanh.
"""

import collections
import contextlib
import functools
import os
import platform
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import layers
from tensorflow.python.ops import gen_nn_ops

from cifar_dcgan.config.model import ModelParams

IMAGE_SHAPE = (32, 32, 3)


def replicas() -> int:
    """Replicas training in sync: 1 outside a distribution strategy (and while Keras traces
    shapes in the strategy's cross-replica context)."""
    context = tf.distribute.get_replica_context()
    return context.num_replicas_in_sync if context else 1


def global_mean(value: tf.Tensor) -> tf.Tensor:
    """The mean over replicas of a per-replica mean: the global batch's mean."""
    if replicas() == 1:
        return value
    return tf.distribute.get_replica_context().all_reduce("MEAN", value)


def replica_share(values: tf.Tensor) -> tf.Tensor:
    """This replica's rows of a tensor drawn for the global batch."""
    n = replicas()
    if n == 1:
        return values
    rows = tf.shape(values)[0] // n
    start = tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group, tf.int32) * rows
    return values[start : start + rows]


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
    return keras.initializers.GlorotUniform(seed=seed)


def build_discriminator(params: ModelParams, seed: int, activation: str | None = "sigmoid") -> keras.Model:
    """(B, 32, 32, 3) images in [-1, 1] -> (B, 1) probability that each is real (or with
    `activation` None a score: see cifar_dcgan.losses)."""
    init = lambda i: _initializer(params, seed + i)  # noqa: E731 - a distinct seed per layer

    def normalized(layer: layers.Layer, **kwargs) -> layers.Layer:
        """`layer`, spectrally normalized with model.d_spectral_norm (one power iteration per
        training call; its vector is a non-trainable weight, kept in checkpoints)."""
        return layers.SpectralNormalization(layer, **kwargs) if params.d_spectral_norm else layer

    inputs = keras.Input(IMAGE_SHAPE)
    x = normalized(
        layers.Conv2D(params.d_filters[0], params.d_kernel, padding="same", kernel_initializer=init(0))
    )(inputs)  # (B, 32, 32, 64)
    x = layers.LeakyReLU(negative_slope=params.leaky_slope)(x)
    for i, filters in enumerate(params.d_filters[1:], start=1):
        x = normalized(
            layers.Conv2D(filters, params.d_kernel, strides=2, padding="same", kernel_initializer=init(i))
        )(x)  # (B, 32 / 2^i, 32 / 2^i, filters)
        if params.d_batch_norm:
            x = layers.BatchNormalization(synchronized=True)(x)
        x = layers.LeakyReLU(negative_slope=params.leaky_slope)(x)
    x = layers.Flatten()(x)  # (B, 4 * 4 * 256)
    x = BatchDropout(params.d_dropout, seed=seed)(x)
    # float32 output even under mixed precision: a bf16 sigmoid rounds to 0.5 at init
    outputs = normalized(
        layers.Dense(
            1, activation=activation, dtype="float32", kernel_initializer=init(len(params.d_filters))
        ),
        dtype="float32",
    )(x)  # (B, 1)
    return fast_kernels(keras.Model(inputs, outputs, name="discriminator"))


def build_generator(params: ModelParams, latent_dim: int, seed: int) -> keras.Model:
    """(B, latent_dim) latent points -> (B, 32, 32, 3) images in [-1, 1]."""
    init = lambda i: _initializer(params, seed + 100 + i)  # noqa: E731
    side = IMAGE_SHAPE[0] // 2 ** len(params.g_filters)  # 4 for three upsampling blocks
    inputs = keras.Input((latent_dim,))
    x = layers.Dense(side * side * params.g_seed_filters, kernel_initializer=init(0))(inputs)
    if params.g_batch_norm:
        x = layers.BatchNormalization(synchronized=True)(x)
    x = layers.LeakyReLU(negative_slope=params.leaky_slope)(x)
    x = layers.Reshape((side, side, params.g_seed_filters))(x)  # (B, 4, 4, 256)
    for i, filters in enumerate(params.g_filters, start=1):
        if params.g_upsampling == "conv_transpose":
            x = layers.Conv2DTranspose(
                filters, params.g_kernel, strides=2, padding="same", kernel_initializer=init(i)
            )(x)
        else:
            x = layers.UpSampling2D(2)(x)
            x = layers.Conv2D(filters, params.g_kernel, padding="same", kernel_initializer=init(i))(x)
        if params.g_batch_norm:  # (B, 4 * 2^i, 4 * 2^i, filters)
            x = layers.BatchNormalization(synchronized=True)(x)
        x = layers.LeakyReLU(negative_slope=params.leaky_slope)(x)
    outputs = layers.Conv2D(
        3,
        3,
        padding="same",
        activation="tanh",
        dtype="float32",
        kernel_initializer=init(len(params.g_filters) + 1),
    )(x)  # (B, 32, 32, 3)
    return fast_kernels(keras.Model(inputs, outputs, name="generator"))


def latent_points(rng: np.random.Generator, n: int, dim: int, distribution: str) -> np.ndarray:
    """(n, dim) float32 latent points from numpy (outside the training step's RNG):
    gaussian N(0, 1) or uniform U(-1, 1), as `train_gan.latent_distribution` says."""
    if distribution == "uniform":
        return rng.uniform(-1.0, 1.0, (n, dim)).astype(np.float32)
    return rng.standard_normal((n, dim)).astype(np.float32)


def _cpuinfo(cpuinfo: str | None) -> str:
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text() if path.exists() else ""
    return cpuinfo


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU computes bf16 natively (AVX-512 bf16 or AMX), from /proc/cpuinfo's text."""
    cpuinfo = _cpuinfo(cpuinfo)
    return "avx512_bf16" in cpuinfo or "amx_bf16" in cpuinfo


def cpuinfo_values(field: str, cpuinfo: str | None = None) -> list[str]:
    """The values of one /proc/cpuinfo field (`model name`, `flags`, `cpu MHz`), a line per
    logical CPU; none off Linux."""
    lines = [line.split(":", 1) for line in _cpuinfo(cpuinfo).splitlines() if ":" in line]
    return [value.strip() for key, value in lines if key.strip() == field]


def cpu_description(cpuinfo: str | None = None, cores: int | None = None) -> str:
    """The CPU as a training's speed depends on it: its model name, its widest vector units and
    the cores this process may use, e.g. `AMD EPYC (avx2), 2 cores`. Virtual machines often
    name only the family, so the units tell an AVX2-only EPYC from one with AVX-512 bf16."""
    flags = set(next(iter(cpuinfo_values("flags", cpuinfo)), "").split())
    units = [u for u in ("amx_bf16", "avx512_bf16", "avx512f", "avx2") if u in flags][:2]
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    name = next(iter(cpuinfo_values("model name", cpuinfo)), "") or platform.processor() or platform.machine()
    units_text = f" ({', '.join(units)})" if units else ""
    return f"{name}{units_text}, {cores} cores"


def gpu_description() -> str:
    """The GPUs TensorFlow sees, by name and count (`NVIDIA A100-SXM4-40GB x2`), or `none`."""
    names = collections.Counter(
        tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)
        for gpu in tf.config.list_physical_devices("GPU")
    )
    return ", ".join(f"{name} x{n}" if n > 1 else name for name, n in names.items()) or "none"


def resolve_precision(precision: str) -> str:
    """`auto` -> mixed_bfloat16 on CPUs with native bf16 (and oneDNN on) and GPUs of compute
    capability >= 8, mixed_float16 on older GPUs, float32 elsewhere; other names pass through."""
    if precision != "auto":
        return precision
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        major = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0))[0]
        return "mixed_bfloat16" if major >= 8 else "mixed_float16"
    return "mixed_bfloat16" if native_bf16() else "float32"  # with oneDNN off bf16 would not pay


def native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether TensorFlow has bf16 kernels of bf16 hardware here: a GPU, or a CPU with AVX-512
    bf16 or AMX and oneDNN's kernels on (elsewhere TensorFlow's own bf16 kernels run)."""
    from tensorflow.python.util import _pywrap_util_port  # TensorFlow's own answer, as it loaded

    if tf.config.list_physical_devices("GPU"):
        return True
    return cpu_has_bf16(cpuinfo) and _pywrap_util_port.IsMklEnabled()


def fast_kernels(model: keras.Model) -> keras.Model:
    """`model` computing what Keras computes, with the kernels that run it fastest here
    (measured: README, "What was tried to make the step faster"). Layers are changed in place
    (the class, config and saved file stay Keras' own):
    - LeakyReLU takes its gradient from its output (the same values: with a slope >= 0 the
      output has the input's sign), so that only the activation reads a conv's or matmul's
      biased output and TensorFlow fuses conv or matmul + bias + LeakyReLU into one oneDNN op;
    - in bf16, the activations and biases no oneDNN op takes in run under XLA: TensorFlow's
      own bf16 elementwise kernels are 1.5 to 3 times slower, with the same results; the
      gradients of those biases are summed in float32 (`_bias_add`), not in bf16 as
      TensorFlow's BiasAddGrad sums them;
    - where TensorFlow has no bf16 kernels of bf16 hardware (`native_bf16`), the bf16
      convolutions, conv-transposes and dense layers sum in float32 as bf16 hardware does
      (`_summed_in_float32`);
    - a float32 conv with fewer than 16 output channels (G's RGB layer) is one matrix product
      and a 0/1 conv (`_thin_convolution`)."""
    summed = not native_bf16()
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)  # the layer inside SpectralNormalization
        bf16 = inner.compute_dtype == "bfloat16"
        if isinstance(inner, layers.LeakyReLU):
            inner.call = functools.partial(_leaky_relu, inner, _fused_into(layer, summed))
        elif isinstance(inner, layers.Conv2DTranspose) and bf16:
            inner.call = functools.partial(_conv_transpose_call, inner, summed)
        elif isinstance(inner, layers.Conv2D) and bf16 and summed:
            inner.call = functools.partial(_conv_summed_in_float32, inner)
        elif isinstance(inner, layers.Conv2D) and _thin(inner):
            inner.convolution_op = functools.partial(_thin_convolution, inner)
        elif isinstance(inner, layers.Dense) and bf16 and summed:  # its matmul and bias follow float32 inputs
            inner.call = _summed_in_float32(inner.call)
    return model


# XLA fuses nothing here (one op each); it runs bf16 elementwise ops vectorized, TensorFlow's
# own kernels do not (G's largest activation, 128 x 32 x 32 x 128: 5.8 against 15.4 ms)
_xla_leaky_relu = tf.function(tf.nn.leaky_relu, jit_compile=True)
_xla_leaky_relu_grad = tf.function(gen_nn_ops.leaky_relu_grad, jit_compile=True)
_xla_bias_add = tf.function(tf.nn.bias_add, jit_compile=True)


@tf.custom_gradient
def _bias_add(x, bias):
    """tf.nn.bias_add (channels last) under XLA, the bias's gradient a float32-accumulated sum:
    TensorFlow's BiasAddGrad rounds its running sums to bf16 (25% off for 128 x 32 x 32 normal
    values per channel in `make profile`, where tf.reduce_sum, faster, is within bf16's
    rounding of the exact sum; XLA's sum is as close but 12 times slower)."""
    return _xla_bias_add(x, bias), lambda dy: (dy, tf.reduce_sum(dy, list(range(dy.shape.rank - 1))))


def _fused_into(layer: layers.Layer, summed: bool) -> bool:
    """Whether TensorFlow fuses this activation into the op before it: a Conv2D or Dense
    (conv-transposes and batch norm have no such fusion), unless that op is a bf16 one summed
    in float32, whose result is cast to bf16 before its bias."""
    producer = getattr(getattr(layer.input, "_keras_history", None), "operation", None)
    producer = getattr(producer, "layer", producer)
    if not isinstance(producer, (layers.Conv2D, layers.Dense)):
        return False
    return not (summed and producer.compute_dtype == "bfloat16")


def _leaky_relu(layer: layers.LeakyReLU, fused: bool, inputs):
    """LeakyReLU.call with its gradient taken from its output (see `fast_kernels`)."""
    slope, xla = layer.negative_slope, inputs.dtype == tf.bfloat16

    @tf.custom_gradient
    def leaky_relu(x):
        y = _xla_leaky_relu(x, slope) if xla and not fused else tf.nn.leaky_relu(x, slope)
        gradient = _xla_leaky_relu_grad if xla else gen_nn_ops.leaky_relu_grad
        return y, lambda dy: gradient(dy, y, slope)

    return leaky_relu(inputs)


def _summed_in_float32(op):
    """`op` on float32 copies of its bf16 tensors (exact), its result rounded to bf16, as bf16
    hardware's kernels do (bf16 in, float32 sums, bf16 out); the gradients flow back through
    the same casts, so they are rounded to bf16 too. TensorFlow's own bf16 kernels are several
    times slower and most round their sums to bf16 along the way."""

    def summed(*args, **kwargs):
        exact = [tf.cast(a, tf.float32) if tf.is_tensor(a) and a.dtype == tf.bfloat16 else a for a in args]
        return tf.cast(op(*exact, **kwargs), tf.bfloat16)

    return summed


def _conv_transpose_call(layer: layers.Conv2DTranspose, summed: bool, inputs):
    """Conv2DTranspose.call of a bf16 layer: the transposed convolution summed in float32 where
    `summed`, the bias added under XLA (Keras passes its kernel to no method of its own, unlike
    Conv2D's `convolution_op`)."""
    conv_transpose = _summed_in_float32(keras.ops.conv_transpose) if summed else keras.ops.conv_transpose
    outputs = conv_transpose(
        inputs,
        layer.kernel.value,  # bf16: in its call a layer reads its float32 weights cast to bf16
        strides=list(layer.strides),
        padding=layer.padding,
        output_padding=layer.output_padding,
        dilation_rate=layer.dilation_rate,
        data_format=layer.data_format,
    )
    return _bias_and_activation(layer, outputs)


def _conv_summed_in_float32(layer: layers.Conv2D, inputs):
    """Conv2D.call of a bf16 layer where there are no bf16 kernels: the convolution summed in
    float32, the bias added by `_bias_add` (Keras' bias add would leave its gradient to
    BiasAddGrad, which sums in bf16)."""
    outputs = _summed_in_float32(layer.convolution_op)(inputs, layer.kernel.value)
    return _bias_and_activation(layer, outputs)


def _bias_and_activation(layer: layers.Layer, outputs):
    """The end of a bf16 conv's or conv-transpose's call: its bias (`_bias_add`), its activation."""
    if layer.use_bias:
        if layer.data_format == "channels_last":
            outputs = _bias_add(outputs, layer.bias.value)
        else:
            outputs = tf.nn.bias_add(outputs, layer.bias.value, "NCHW")
    return layer.activation(outputs) if layer.activation is not None else outputs


def _thin(layer: layers.Conv2D) -> bool:
    """A float32 2-D conv with fewer output channels than an AVX-512 register holds (16)."""
    return (
        layer.compute_dtype == "float32"
        and layer.filters < 16
        and layer.rank == 2
        and layer.groups == 1
        and tuple(layer.dilation_rate) == (1, 1)
        and layer.data_format == "channels_last"
        and tuple(layer.kernel_size) != (1, 1)
    )


def _thin_convolution(layer: layers.Conv2D, inputs, kernel):
    """Conv2D.convolution_op for few output channels: every pixel times every tap's weights,
    one matrix product (B*H*W, C_in) @ (C_in, taps*C_out), then a conv whose fixed 0/1 kernel
    takes tap t's C_out channels at offset t and sums them. The same sums in another order
    (round-off apart); oneDNN's direct kernel pads C_out to 16 and is slower (G's output layer,
    forward and both gradients, batch 128: 66 against 49 ms on a 2-core Xeon)."""
    kh, kw, c_in, c_out = kernel.shape
    taps = kh * kw
    kernel = keras.ops.convert_to_tensor(kernel)
    weights = tf.reshape(tf.transpose(kernel, [2, 0, 1, 3]), [c_in, taps * c_out])  # (C_in, taps*C_out)
    pixels = tf.reshape(inputs, [-1, c_in])  # (B*H*W, C_in)
    products = tf.reshape(tf.matmul(pixels, weights), tf.concat([tf.shape(inputs)[:3], [taps * c_out]], 0))
    picks = np.zeros((kh, kw, taps * c_out, c_out), np.float32)
    for t in range(taps):
        picks[t // kw, t % kw, t * c_out : (t + 1) * c_out] = np.eye(c_out)
    return tf.nn.conv2d(products, picks, list(layer.strides), layer.padding.upper())  # (B, H', W', C_out)


def load_model(path: Path, safe_mode: bool = True) -> keras.Model:
    """A saved model as `keras.models.load_model` gives it, with the kernels the training used
    (`fast_kernels`: bf16 summed as it did)."""
    return fast_kernels(keras.models.load_model(path, safe_mode=safe_mode))


def precision_notice(key: str, precision: str, cpuinfo: str | None = None) -> str | None:
    """A line for the user when `key` asks for bf16 that this machine has no kernels for (no
    GPU, a CPU without bf16 units): there bf16 is summed in float32 and costs more than float32
    (`fast_kernels`). None otherwise."""
    if resolve_precision(precision) != "mixed_bfloat16" or native_bf16(cpuinfo):
        return None
    return (
        f"note: {key} = {precision}, but this machine has no bf16 kernels (no GPU; no avx512_bf16 or"
        " amx_bf16, or oneDNN off): convolutions and dense layers sum their bf16 operands in float32"
        " and round to bf16, as bf16 hardware does, a little slower than float32 (nothing is gained"
        " here but runs comparable with bf16 machines). For speed set float32, or auto (float32 here)."
    )


def machine_tags(precision: str) -> dict[str, str]:
    """What a training run's speed and last bits depend on beyond its params: what `precision`
    became on this machine, the machine's CPU and GPUs, and whether TensorFlow runs oneDNN's
    kernels (`on` unless TF_ENABLE_ONEDNN_OPTS=0, or TensorFlow was loaded before this package)."""
    from tensorflow.python.util import _pywrap_util_port  # TensorFlow's own answer, as it loaded

    tags = {
        "precision_resolved": resolve_precision(precision),
        "cpu": cpu_description(),
        "gpu": gpu_description(),
        "onednn": "on" if _pywrap_util_port.IsMklEnabled() else "off",
    }
    if tags["precision_resolved"] == "mixed_bfloat16":  # bf16 hardware's kernels, or its sums in float32
        tags["bf16_kernels"] = "native" if native_bf16() else "float32_sums"
    return tags


@contextlib.contextmanager
def dtype_policy(precision: str):
    """Build models under a Keras dtype policy, restoring the previous one afterwards."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(resolve_precision(precision))
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def adam(learning_rate: float, beta1: float, precision: str = "float32") -> keras.optimizers.Optimizer:
    """Adam; under mixed_float16 wrapped in dynamic loss scaling, which float16 needs."""
    optimizer = keras.optimizers.Adam(learning_rate=learning_rate, beta_1=beta1)
    if resolve_precision(precision) == "mixed_float16":
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
