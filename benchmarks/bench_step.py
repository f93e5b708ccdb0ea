"""The training step against the classic Keras loop, the machine's peaks, snapshot scoring."""

import cifar_dcgan  # noqa: F401  first: it turns TensorFlow's oneDNN kernels on before TensorFlow loads

# isort: split
import dataclasses
import os
import time

import keras
import numpy as np
import tensorflow as tf

from cifar_dcgan import evaluator
from cifar_dcgan.machine import cpuinfo_values, machine_tags
from cifar_dcgan.models import adam, build_discriminator, build_generator, latent_points
from cifar_dcgan.training import build_gan, real_index_batches

SHAPE = (32, 32, 3)  # CIFAR-10's images

# fp32 FLOP per cycle per core: two FMA pipes x lanes x 2 FLOP; 512-bit pipes with AVX-512
# (Zen 5, recent Xeon; Zen 4 splits them, so half), 256-bit ones with AVX2 only (Zen 3)
FP32_FLOP_PER_CYCLE = {"avx512f": 64, "avx2": 32}


def forward_flops(model: keras.Model) -> int:
    """Multiply-adds x 2 of the Conv2D, Conv2DTranspose and Dense layers, per image."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2DTranspose):
            _, h, w, c_in = layer.input.shape
            total += 2 * h * w * np.prod(layer.kernel_size) * c_in * layer.filters
        elif isinstance(layer, keras.layers.Conv2D):
            _, h, w, _ = layer.output.shape
            total += 2 * h * w * np.prod(layer.kernel_size) * layer.input.shape[-1] * layer.filters
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * layer.input.shape[-1] * layer.units
    return int(total)


def iteration_flops(d_flops: int, g_flops: int, batch: int) -> int:
    """D on B/2 real (fwd + bwd = 3x), G fwd + D 3x on B/2 fake, G 3x + D fwd and input-grad (2x) on B."""
    half = batch // 2
    return 3 * d_flops * half + (g_flops + 3 * d_flops) * half + (3 * g_flops + 2 * d_flops) * batch


def classic_loop(model_params, latent_dim: int, images: np.ndarray, batch: int, seed: int):
    """The tutorial pattern, returning a function that runs one iteration."""
    keras.utils.set_random_seed(seed)
    d = build_discriminator(model_params, seed, image_shape=SHAPE)
    g = build_generator(model_params, latent_dim, seed, image_shape=SHAPE)
    d.compile(loss="binary_crossentropy", optimizer=adam(2e-4, 0.5), metrics=["accuracy"])
    d.trainable = False
    gan = keras.Sequential([g, d])
    gan.compile(loss="binary_crossentropy", optimizer=adam(2e-4, 0.5))
    rng, half = np.random.default_rng(seed), batch // 2

    def iteration():
        d.trainable = True
        d.train_on_batch(images[rng.integers(0, len(images), half)], np.ones((half, 1)))
        fake = g.predict(rng.standard_normal((half, latent_dim)).astype(np.float32), verbose=0)
        d.train_on_batch(fake, np.zeros((half, 1)))
        d.trainable = False
        gan.train_on_batch(rng.standard_normal((batch, latent_dim)).astype(np.float32), np.ones((batch, 1)))

    iteration()  # trace all three functions, then check the pattern does what it claims
    d_before, g_before = [w.numpy().copy() for w in d.weights], [w.numpy().copy() for w in g.weights]
    gan.train_on_batch(rng.standard_normal((batch, latent_dim)).astype(np.float32), np.ones((batch, 1)))
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(d_before, d.weights)), "G's update changed D"
    assert not all(np.array_equal(a, w.numpy()) for a, w in zip(g_before, g.weights)), "G did not train"
    d.trainable = True
    d.train_on_batch(images[:half], np.ones((half, 1)))
    assert not all(np.array_equal(a, w.numpy()) for a, w in zip(d_before, d.weights)), "D did not train"
    return iteration, d, g


def project_step(model_params, train_params, images: np.ndarray, precision: str):
    """This project's step, built as train-gan builds it (optimizers included, so the first
    call traces once) and called as `fit()` calls it; returns (one-iteration function,
    first-call seconds, D, G)."""
    params = dataclasses.replace(train_params, precision=precision)
    steps = len(images) // params.batch_size
    gan = build_gan(model_params, params, images, steps, tf.distribute.get_strategy())
    iterator = iter(
        real_index_batches(len(images), params.batch_size // 2, "random", params.seed, params.d_steps)
    )
    gan.make_train_function()
    train_function = gan.train_function

    def iteration():
        logs = train_function(iterator)
        float(logs["g"])  # wait for the result, as the progress bar does

    start = time.perf_counter()
    iteration()
    return iteration, time.perf_counter() - start, gan.discriminator, gan.generator


def interleaved(variants: dict, rounds: int, iterations: int, between=None) -> dict[str, list[float]]:
    """Seconds of each of `iterations` calls per variant, the variants taking turns round by
    round (drift on a shared machine hits all alike); `between()` runs after each round."""
    times = {name: [] for name in variants}
    for _ in range(rounds):
        for name, iteration in variants.items():
            iteration()  # untimed: settle caches after switching variant
            for _ in range(iterations):
                start = time.perf_counter()
                iteration()
                times[name].append(time.perf_counter() - start)
        if between:
            between()
    return times


def matmul_gflops(dtype, n: int = 4096, repeats: int = 10) -> float:
    a = tf.random.normal((n, n), dtype=tf.float32)
    a = tf.cast(a, dtype)
    f = tf.function(lambda x: tf.matmul(x, x))
    f(a).numpy()
    start = time.perf_counter()
    for _ in range(repeats):
        f(a).numpy()
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def cpu_name() -> str:
    """The machine as training runs are tagged (`cpu`: model name, vector units, cores) and
    whether TensorFlow runs oneDNN's kernels."""
    tags = machine_tags("float32")
    return f"{tags['cpu']}; oneDNN {tags['onednn']}"


def theoretical_peak() -> tuple[float, str]:
    mhz = [float(v) for v in cpuinfo_values("cpu MHz")]
    flags = set(next(iter(cpuinfo_values("flags")), "").split())
    per_cycle = next((n for unit, n in FP32_FLOP_PER_CYCLE.items() if unit in flags), 16)
    cores = os.cpu_count() or 1
    ghz = max(mhz) / 1000 if mhz else float("nan")
    return (
        cores * per_cycle * ghz,
        f"{cores} cores x {per_cycle} FLOP/cycle x {ghz:.2f} GHz nominal; boost clocks go higher",
    )


def snapshot_scoring(model_params, train_params, evaluator_params) -> float:
    """Seconds to generate `fcd_samples` images and score them with a default-size
    evaluator (its weights do not change the cost), as train-gan does at each snapshot."""
    generator = build_generator(model_params, train_params.latent_dim, train_params.seed, image_shape=SHAPE)
    judge = evaluator.extractor(evaluator.build_classifier(evaluator_params, 0, SHAPE, 10))
    rng = np.random.default_rng(0)
    features = rng.standard_normal((10_000, evaluator_params.features))
    stats = evaluator.RealStats.of(features, rng)
    latents = latent_points(rng, train_params.fcd_samples, train_params.latent_dim, "gaussian")
    timings = []
    for _ in range(2):  # the first includes tracing
        start = time.perf_counter()
        images = generator.predict(latents, batch_size=500, verbose=0)
        evaluator.quality(judge, stats, images, seed=0)
        timings.append(time.perf_counter() - start)
    return timings[-1]
