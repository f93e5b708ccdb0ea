"""Faster kernels for the same maths on a CPU: `fast_kernels(model)` swaps how some Keras
layers compute (LeakyReLU's gradient, bf16 activations and biases under XLA, bf16 summed in
float32 where the CPU has no bf16 units, thin convolutions as a matrix product), keeping the
layers' classes, configs and saved files Keras' own. Each choice was measured op by op on
CPUs (docs/performance.md); where a GPU is visible nothing is changed.
"""

import functools

import keras
import numpy as np
import tensorflow as tf
from keras import layers
from tensorflow.python.ops import gen_nn_ops

from cifar_dcgan.machine import gpu_visible, native_bf16


def fast_kernels(model: keras.Model) -> keras.Model:
    """`model` computing what Keras computes, with the kernels that run it fastest here
    on a CPU (measured: docs/performance.md, "What was tried to make the step faster"; where
    a GPU is visible the model is returned as Keras built it: nothing here was measured on
    one). Layers are changed in place
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
    if gpu_visible():
        return model
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
