"""The training step: which network each update changes, the targets, determinism."""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from cifar_dcgan.gan import DCGAN
from cifar_dcgan.losses import LOSSES
from cifar_dcgan.machine import cpu_description, dtype_policy, machine_tags, native_bf16, precision_notice
from cifar_dcgan.models import adam, build_discriminator, build_generator, load_model
from cifar_dcgan.tracker import NullTracker
from cifar_dcgan.tracking import MlflowTracker
from cifar_dcgan.training import train_gan
from conftest import REPO, SHAPE, SMALL_MODEL, synthetic_images, tiny_training


def real_images(n=64):
    return (synthetic_images(n).astype(np.float32) - 127.5) / 127.5


def make_gan(make_params, d_lr=2e-4, g_lr=2e-4, model=None, **train):
    model = make_params("model", **{**SMALL_MODEL, **(model or {})})
    params = make_params("train_gan", **tiny_training(**train))
    keras.utils.set_random_seed(params.seed)
    gan = DCGAN(
        build_discriminator(model, params.seed, LOSSES[params.loss].activation, image_shape=SHAPE),
        build_generator(model, params.latent_dim, params.seed, image_shape=SHAPE),
        tf.constant(real_images()),
        params,
        steps_per_epoch=4,
    )
    gan.compile(adam(d_lr, params.beta1), adam(g_lr, params.beta1))
    return gan


def weights(model):
    return [w.numpy().copy() for w in model.trainable_weights]


def changed(before, after):
    return any(not np.array_equal(a, b) for a, b in zip(before, after))


def one_step(gan):
    """One iteration on a half-batch of 8 real images per D step (column j: D step j)."""
    k = gan.params.d_steps
    return gan.train_step(tf.constant(np.arange(8 * k).reshape(8, k), dtype=tf.int64))


@pytest.mark.parametrize(
    "d_model", [{}, {"d_batch_norm": True}, {"d_spectral_norm": True, "d_batch_norm": True}], ids=str
)
def test_generator_update_leaves_discriminator_unchanged(make_params, d_model):
    # D's weights, batch-norm statistics and spectral-norm state (Keras' SpectralNormalization
    # rewrites its kernel in every training call, the G step's too) are as D's updates left them
    gan = make_gan(make_params, model={**d_model, "g_batch_norm": True})
    one_step(gan)
    d_state = {v.path: v.numpy().copy() for v in gan.discriminator.weights if "seed_generator" not in v.path}
    g_before = weights(gan.generator)
    gan.generator_step(8)
    assert changed(g_before, weights(gan.generator))
    for v in gan.discriminator.weights:
        if v.path in d_state:
            np.testing.assert_array_equal(v.numpy(), d_state[v.path], err_msg=v.path)


def test_d_steps_update_d_that_many_times_per_g_update_each_on_its_own_half_batch(make_params):
    from cifar_dcgan.training import real_index_batches

    gan = make_gan(make_params, d_steps=3)
    one_step(gan)
    assert (int(gan.d_optimizer.iterations), int(gan.g_optimizer.iterations)) == (6, 1)  # real + fake, x3
    batch = next(iter(real_index_batches(1000, 8, "shuffled", 1, d_steps=3))).numpy()
    assert batch.shape == (8, 3) and len(set(batch.ravel())) == 24
    classic = next(iter(tf.data.Dataset.random(seed=1).batch(8).map(lambda x: tf.math.floormod(x, 1000))))
    np.testing.assert_array_equal(next(iter(real_index_batches(1000, 8, "random", 1)))[:, 0], classic)


def test_spectral_norm_holds_every_d_layer_near_a_unit_spectral_norm(make_params):
    gan = make_gan(make_params, d_lr=1e-2, model={"d_spectral_norm": True})
    for _ in range(8):
        one_step(gan)
    gan.discriminator(tf.constant(real_images(8)), training=True)  # normalizes the kernels it uses
    normalized = [
        layer for layer in gan.discriminator.layers if isinstance(layer, keras.layers.SpectralNormalization)
    ]
    assert len(normalized) == 5  # four convs and the output layer
    for layer in normalized:
        kernel = layer.kernel.numpy()
        sigma = np.linalg.svd(kernel.reshape(-1, kernel.shape[-1]), compute_uv=False)[0]
        assert abs(sigma - 1) < 0.05, (layer.name, sigma)


def test_discriminator_updates_leave_generator_unchanged(make_params):
    gan = make_gan(make_params, g_lr=0.0)
    d_before, g_before = weights(gan.discriminator), weights(gan.generator)
    one_step(gan)
    assert changed(d_before, weights(gan.discriminator))
    assert not changed(g_before, weights(gan.generator))


def test_label_smoothing_is_one_sided(make_params):
    gan = make_gan(make_params, label_smoothing=0.1)
    real = gan.draws.discriminator_targets(0, tf.ones((1000, 1)), 1000).numpy()
    fake = gan.draws.discriminator_targets(3, tf.zeros((1000, 1)), 1000).numpy()
    np.testing.assert_allclose(real, 0.9, rtol=1e-6)
    assert np.all(fake == 0.0)


def test_label_noise_stays_within_its_band(make_params):
    gan = make_gan(make_params, label_smoothing=0.1, label_noise=0.05)
    real = gan.draws.discriminator_targets(0, tf.ones((5000, 1)), 5000).numpy()
    assert 0.85 - 1e-6 <= real.min() < 0.86 and 0.94 < real.max() <= 0.95 + 1e-6
    assert abs(real.mean() - 0.9) < 0.005


def test_label_flip_swaps_labels_at_the_given_rate(make_params):
    gan = make_gan(make_params, label_flip=0.25, label_smoothing=0.1)
    real = gan.draws.discriminator_targets(0, tf.ones((20000, 1)), 20000).numpy()
    fake = gan.draws.discriminator_targets(3, tf.zeros((20000, 1)), 20000).numpy()
    assert set(np.round(np.unique(real).astype(float), 5)) == {0.0, 0.9}  # flipped reals become fake (0)
    assert set(np.round(np.unique(fake).astype(float), 5)) == {
        0.0,
        0.9,
    }  # flipped fakes become real (smoothed)
    assert abs(np.mean(real == 0.0) - 0.25) < 0.015 and abs(np.mean(fake > 0) - 0.25) < 0.015


def test_per_iteration_losses_are_recorded_in_order(make_params):
    gan = make_gan(make_params)
    logs = [one_step(gan) for _ in range(4)]
    history = gan.loss_history.numpy()
    assert history.shape == (4, 3) and np.all(history > 0)
    assert float(logs[-1]["d1"]) == pytest.approx(history[:, 0].mean(), rel=1e-5)


def test_same_seed_same_losses_with_or_without_tracking(tmp_path, make_params):
    from mlflow import MlflowClient

    model = make_params("model", **SMALL_MODEL)
    params = make_params("train_gan", **tiny_training())
    images = real_images()

    def losses(tracker, name):
        train_gan(images, model, params, tmp_path / name / "snap", tmp_path / name / "rep", tracker)
        return (tmp_path / name / "rep" / "losses.csv").read_text()

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.create_run(client.create_experiment("t", (tmp_path / "art").as_uri()))
    tracker = MlflowTracker(client, run.info.run_id, client.tracking_uri)
    untracked, tracked = losses(NullTracker(), "a"), losses(tracker, "b")
    tracker.flush()
    assert untracked == tracked
    assert len(untracked.splitlines()) == 1 + 2 * 4  # header + 2 epochs x 64 // 16 iterations
    history = client.get_metric_history(run.info.run_id, "g")
    assert [m.step for m in history] == list(range(1, 9))
    assert sorted(p.name for p in (tmp_path / "b" / "snap").iterdir()) == [
        "epoch_001.keras",
        "epoch_002.keras",
    ]


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_trains_with_float32_outputs(tmp_path, make_params, precision):
    model = make_params("model", **SMALL_MODEL)
    params = make_params("train_gan", **tiny_training(precision=precision, epochs=1))
    gan = train_gan(real_images(), model, params, tmp_path / "snap", tmp_path / "rep", NullTracker())
    assert gan.generator.layers[1].compute_dtype == precision.removeprefix("mixed_")
    assert gan.discriminator.output.dtype == gan.generator.output.dtype == "float32"
    losses = np.loadtxt(tmp_path / "rep" / "losses.csv", delimiter=",", skiprows=1)
    assert np.all(np.isfinite(losses)) and losses.shape == (4, 4)
    assert keras.config.dtype_policy().name == "float32"  # the policy does not leak


def test_bf16_asked_of_a_cpu_without_bf16_units_is_named_with_what_to_set_instead():
    avx2, amx = "flags : fpu sse2 avx avx2 fma", "flags : fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile"
    notice = precision_notice("train_gan.precision", "mixed_bfloat16", cpuinfo=avx2)
    assert notice.startswith("note: train_gan.precision = mixed_bfloat16")
    assert "no bf16 kernels" in notice and "sum their bf16 operands in float32" in notice
    assert "set float32, or auto (float32 here)" in notice
    if native_bf16(amx):  # oneDNN on: TensorFlow runs bf16 hardware's kernels there
        assert precision_notice("train_gan.precision", "mixed_bfloat16", cpuinfo=amx) is None
    for precision in ("float32", "mixed_float16"):  # nothing emulated: nothing to say
        assert precision_notice("train_evaluator.precision", precision, cpuinfo=avx2) is None


def test_machines_that_run_at_different_speeds_are_named_apart():
    # virtual machines often name only the family: the vector units tell the kinds apart
    head = "processor : 0\nvendor_id : AuthenticAMD\nmodel name : AMD EPYC\n"
    avx2 = cpu_description(head + "flags : fpu sse2 avx avx2 fma\n", cores=2)
    bf16 = cpu_description(head + "flags : fpu avx2 avx512f avx512_bf16\n", cores=2)
    assert avx2 == "AMD EPYC (avx2), 2 cores"
    assert bf16 == "AMD EPYC (avx512_bf16, avx512f), 2 cores"
    amx = "model name : Intel(R) Xeon(R) Platinum\nflags : avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
    assert cpu_description(amx, cores=4) == "Intel(R) Xeon(R) Platinum (amx_bf16, avx512_bf16), 4 cores"
    two_lines = head + "flags : fpu avx2\n" + head + "flags : fpu avx2\n"  # /proc/cpuinfo has one per CPU
    assert cpu_description(two_lines, cores=8) == "AMD EPYC (avx2), 8 cores"
    assert machine_tags("float32")["cpu"] == cpu_description()  # this machine, as its runs are tagged


def _error_over_bf16_rounding(found: tf.Tensor, exact: tf.Tensor) -> float:
    """How far a bf16 result is from the exact one, over the error of rounding the exact one
    to bf16 (no bf16 result can do better): 1 for float32 sums, 8-13 for sums in bf16."""
    rounded = tf.cast(tf.cast(exact, tf.bfloat16), tf.float64)
    exact = tf.cast(exact, tf.float64)
    return float(tf.norm(tf.cast(found, tf.float64) - exact) / tf.norm(rounded - exact))


@pytest.mark.parametrize("which", ["generator's dense", "generator's conv-transpose", "discriminator's conv"])
def test_bf16_layers_sum_in_float32_as_bf16_hardware_does(make_params, which):
    # the default model's layers under mixed_bfloat16: output, input gradient and kernel gradient
    # against float64 on the same bf16 values; TensorFlow's own bf16 kernels (CPUs without bf16
    # units) lose 2x (dense) to 13x (conv-transpose filter gradient) more than the rounding
    model = make_params("model")
    with dtype_policy("mixed_bfloat16"):
        g, d = (
            build_generator(model, 100, seed=1, image_shape=SHAPE),
            build_discriminator(model, seed=1, image_shape=SHAPE),
        )
    layer, shape = {
        "generator's dense": (g.layers[1], (16, 100)),
        "generator's conv-transpose": (g.layers[-3], (16, 16, 16, 128)),
        "discriminator's conv": (d.layers[3], (16, 32, 32, 64)),
    }[which]
    assert layer.compute_dtype == "bfloat16" and layer.kernel.dtype == "float32"
    rng = np.random.default_rng(0)
    x = tf.cast(rng.standard_normal(shape), tf.bfloat16)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        upstream = tf.cast(rng.standard_normal(y.shape), tf.bfloat16)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) * tf.cast(upstream, tf.float32))
    dx, dkernel, dbias = tape.gradient(loss, [x, layer.kernel, layer.bias])
    assert y.dtype == dx.dtype == tf.bfloat16

    x64 = tf.cast(x, tf.float64)  # the same bf16 values, exact in float64
    kernel64 = tf.Variable(tf.cast(tf.cast(layer.kernel.value, tf.bfloat16), tf.float64))
    with tf.GradientTape() as tape:
        tape.watch(x64)
        if which == "generator's conv-transpose":
            y64 = tf.nn.conv2d_transpose(x64, kernel64, (16, 32, 32, 128), 2, "SAME")
        elif which == "discriminator's conv":
            y64 = tf.nn.conv2d(x64, kernel64, 2, "SAME")
        else:
            y64 = tf.matmul(x64, kernel64)  # the biases are 0 at initialisation
        loss64 = tf.reduce_sum(y64 * tf.cast(upstream, tf.float64))
    dx64, dkernel64 = tape.gradient(loss64, [x64, kernel64])

    assert _error_over_bf16_rounding(y, y64) < 1.5
    assert _error_over_bf16_rounding(dx, dx64) < 1.5
    assert _error_over_bf16_rounding(dkernel, dkernel64) < 1.5
    if which == "generator's conv-transpose":  # TensorFlow's BiasAddGrad sums in bf16 (>70% off in training)
        dbias64 = tf.reduce_sum(tf.cast(upstream, tf.float64), [0, 1, 2])
        assert _error_over_bf16_rounding(dbias, dbias64) < 1.5


@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])
def test_the_faster_kernels_are_as_close_to_exact_as_keras_own_layers(make_params, precision):
    # G then D, compiled as the step is, against float64: fast_kernels' models (LeakyReLU's
    # gradient from its output, XLA activations in bf16, the thin RGB conv) and the same
    # weights in Keras' own layers (clone_model builds them afresh)
    model = make_params("model")
    with dtype_policy(precision):
        g, d = (
            build_generator(model, 100, seed=1, image_shape=SHAPE),
            build_discriminator(model, seed=1, image_shape=SHAPE),
        )
        g_keras, d_keras = keras.models.clone_model(g), keras.models.clone_model(d)
    with dtype_policy("float64"):
        g64, d64 = (
            build_generator(model, 100, seed=1, image_shape=SHAPE),
            build_discriminator(model, seed=1, image_shape=SHAPE),
        )
    for source, copy in ((g, g_keras), (g, g64), (d, d_keras), (d, d64)):
        copy.set_weights([w.astype(copy.weights[0].dtype) for w in source.get_weights()])
    latents = np.random.default_rng(0).standard_normal((64, 100))

    def gradients(g, d):
        @tf.function
        def step(z):
            with tf.GradientTape() as tape:
                scores = tf.cast(d(g(z, training=False), training=False), tf.float64)
                loss = tf.reduce_sum(tf.math.log(scores + 1e-3))
            return tape.gradient(loss, g.trainable_weights + d.trainable_weights)

        return [tf.cast(v, tf.float64) for v in step(tf.constant(latents, g.inputs[0].dtype))]

    exact = gradients(g64, d64)
    fast, own = gradients(g, d), gradients(g_keras, d_keras)
    for weight, a, b, e in zip(g.trainable_weights + d.trainable_weights, fast, own, exact):
        error, own_error = float(tf.norm(a - e) / tf.norm(e)), float(tf.norm(b - e) / tf.norm(e))
        assert error < 1.5 * own_error + 1e-6, (weight.path, error, own_error)


def test_where_a_gpu_is_visible_the_layers_compute_as_keras_built_them(make_params, monkeypatch):
    """The kernel substitutions were measured on CPUs only: on a GPU, Keras' own layers run."""
    from cifar_dcgan import kernels

    model = make_params("model", **SMALL_MODEL)
    patched = build_generator(model, 8, seed=0, image_shape=SHAPE)
    assert any("call" in vars(layer) for layer in patched.layers)  # the CPU's substitutions
    monkeypatch.setattr(kernels, "gpu_visible", lambda: True)
    for network in (
        build_generator(model, 8, seed=0, image_shape=SHAPE),
        build_discriminator(model, seed=0, image_shape=SHAPE),
    ):
        for layer in network.layers:
            assert not {"call", "convolution_op"} & set(vars(layer)), layer.name


def test_a_saved_bf16_generator_loads_summing_as_it_trained(tmp_path, make_params):
    with dtype_policy("mixed_bfloat16"):
        generator = build_generator(make_params("model"), 100, seed=1, image_shape=SHAPE)
    generator.save(tmp_path / "g.keras")
    loaded = load_model(tmp_path / "g.keras")
    latents = np.random.default_rng(0).standard_normal((16, 100)).astype(np.float32)
    assert loaded.layers[-3].compute_dtype == "bfloat16"  # still a bf16 model
    np.testing.assert_array_equal(loaded(latents).numpy(), generator(latents).numpy())


def failing_run(tmp_path, make_params, policy, **changes):
    """Training that fails: D learns 1e6 times too fast and its losses go to NaN at once."""
    model = make_params("model", **SMALL_MODEL)
    settings = {
        "epochs": 3,
        "d_learning_rate": 1e30,
        "on_failure": policy,
        "max_restarts": 2,
        "failure_window": 4,
        **changes,
    }
    params = make_params("train_gan", **tiny_training(**settings))
    return train_gan(
        real_images(), model, params, tmp_path / "snap", tmp_path / "rep", NullTracker(), tmp_path / "ckpt"
    )


def failures(tmp_path):
    return json.loads((tmp_path / "rep" / "failures.json").read_text())


def test_detect_failure_finds_nan_and_a_winning_discriminator():
    from cifar_dcgan.epoch_end import detect_failure

    healthy = np.full((10, 3), 0.7)
    assert detect_failure(healthy, 5, 0.01) is None
    assert detect_failure(np.vstack([healthy, [[np.nan, 0.5, 0.5]]]), 5, 0.01) == "nan"
    won = np.vstack([healthy, np.tile([0.001, 0.002, 9.0], (5, 1))])
    assert detect_failure(won, 5, 0.01) == "d_wins"
    assert detect_failure(won, 10, 0.01) is None  # over a longer window D has not won yet


def test_failure_policy_warn_flags_snapshots_and_goes_on(tmp_path, make_params):
    failing_run(tmp_path, make_params, "warn")
    report = failures(tmp_path)
    assert report["events"] == 3 and not report["stopped"]
    assert {e["failure"] for e in report["log"]} == {"nan"} and {e["action"] for e in report["log"]} == {
        "warn"
    }
    rows = (tmp_path / "rep" / "snapshots.csv").read_text().splitlines()
    assert len(rows) == 4 and all(row.endswith(",nan") for row in rows[1:])
    # the failure log is part of the checkpoint, so a resumed run reports it whole
    from cifar_dcgan import checkpoint

    with np.load(tmp_path / "ckpt" / checkpoint.FILE) as data:
        meta = json.loads(str(data["meta"]))
    assert meta["events"] == report["log"] and meta["restarts"] == 0


def test_failure_policy_stop_raises_and_keeps_nothing_of_the_failed_epoch(tmp_path, make_params):
    from cifar_dcgan.errors import PipelineError

    with pytest.raises(PipelineError, match="training stopped: failure 'nan'"):
        failing_run(tmp_path, make_params, "stop")
    report = failures(tmp_path)
    assert report["stopped"] and [e["action"] for e in report["log"]] == ["stop"]
    assert not (tmp_path / "snap" / "epoch_001.keras").exists()


def test_failure_policy_restart_retries_with_new_seeds_then_stops(tmp_path, make_params):
    from cifar_dcgan.errors import PipelineError

    with pytest.raises(PipelineError, match="training stopped"):
        failing_run(tmp_path, make_params, "restart")
    report = failures(tmp_path)
    assert [e["action"] for e in report["log"]] == ["restart", "restart", "stop"]
    assert report["restarts"] == 2 and [e["epoch"] for e in report["log"]] == [1, 1, 1]


def test_a_discriminator_that_wins_is_detected(tmp_path, make_params):
    # a frozen generator (learning rate ~0) against a fast discriminator: D separates perfectly
    failing_run(
        tmp_path,
        make_params,
        "warn",
        d_learning_rate=1e-2,
        g_learning_rate=1e-12,
        epochs=6,
        failure_loss=0.05,
    )
    report = failures(tmp_path)
    assert report["events"] >= 1 and {e["failure"] for e in report["log"]} == {"d_wins"}
    losses = np.loadtxt(tmp_path / "rep" / "losses.csv", delimiter=",", skiprows=1)
    assert losses[-4:, 1].mean() < 0.05 and losses[-4:, 2].mean() < 0.05


def trainer(tmp_path, images, model):
    """train(params, name, resume=None): a training into tmp_path/name (snap, rep, ckpt)."""

    def train(params, name, resume=None):
        train_gan(
            images, model, params, tmp_path / name / "snap", tmp_path / name / "rep", NullTracker(),
            tmp_path / name / "ckpt", resume,
        )  # fmt: skip

    return train


def test_more_epochs_continue_a_finished_training_and_the_same_epochs_start_over(
    tmp_path, make_params, capsys
):
    from cifar_dcgan import checkpoint

    model = make_params("model", **SMALL_MODEL)
    short, longer = (make_params("train_gan", **tiny_training(epochs=n)) for n in (2, 4))
    images = real_images()

    train = trainer(tmp_path, images, model)

    train(short, "grown")
    first_grid = (tmp_path / "grown" / "rep" / "grids" / "epoch_000.png").read_bytes()
    same = checkpoint.load(tmp_path / "grown" / "ckpt", checkpoint.fingerprint(model, short, images), 2)
    assert same is None and "finished training of 2 epochs" in capsys.readouterr().out
    resume = checkpoint.load(tmp_path / "grown" / "ckpt", checkpoint.fingerprint(model, longer, images), 4)
    assert resume.progress.epochs_done == 2
    train(longer, "grown", resume)
    train(longer, "straight")
    for name in ("losses.csv", "snapshots.csv"):
        assert (tmp_path / "grown" / "rep" / name).read_text() == (
            tmp_path / "straight" / "rep" / name
        ).read_text()
    assert (tmp_path / "grown" / "rep" / "grids" / "epoch_000.png").read_bytes() == first_grid


def test_training_clears_only_its_own_earlier_outputs_from_folders_given_by_hand(tmp_path, make_params):
    """`stages/train_gan.py --snapshots models --reports reports` run by hand: other stages' files stay."""
    models, reports = tmp_path / "models", tmp_path / "reports"
    others = [
        models / "generator.keras",
        models / "evaluator" / "classifier.keras",
        reports / "prepare" / "summary.json",
    ]
    stale = [models / "epoch_009.keras", reports / "grids" / "epoch_009.png", reports / "metrics.json"]
    for path in others + stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("earlier")
    model = make_params("model", **SMALL_MODEL)
    train_gan(
        real_images(),
        model,
        make_params("train_gan", **tiny_training(epochs=1)),
        models,
        reports,
        NullTracker(),
    )
    assert all(path.read_text() == "earlier" for path in others)
    assert not (models / "epoch_009.keras").exists() and not (reports / "grids" / "epoch_009.png").exists()
    assert sorted(p.name for p in models.glob("epoch_*.keras")) == ["epoch_001.keras"]
    assert "d1" in json.loads((reports / "metrics.json").read_text())  # written anew


def test_the_generator_ema_is_the_closed_form_after_k_steps(make_params):
    """After k updates the average weighs G's weights after update t by decay^(k - t),
    normalized over the k updates (the named decay from the start, without a bias towards
    the initial weights), over G's weights after each step."""
    decay, k = 0.9, 4
    gan = make_gan(make_params, g_ema=decay, model={"g_batch_norm": True})
    history = [weights(gan.generator)]
    for _ in range(k):
        one_step(gan)
        history.append(weights(gan.generator))
    shares = np.array([decay ** (k - t) for t in range(1, k + 1)])
    shares /= shares.sum()
    for i, average in enumerate(gan.average.weights):
        expected = sum(share * history[t][i] for t, share in zip(range(1, k + 1), shares))
        np.testing.assert_allclose(average.numpy(), expected, rtol=1e-5, atol=1e-7)
    shown = gan.snapshot_generator()
    assert shown is not gan.generator and changed(weights(gan.generator), weights(shown))
    for a, b in zip(shown.trainable_weights, gan.average.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for a, b in zip(shown.non_trainable_weights, gan.generator.non_trainable_weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())  # batch-norm statistics: G's own
    assert make_gan(make_params).snapshot_generator().name.startswith("generator")  # off: G itself


STABILIZERS = {"loss": "hinge", "d_steps": 2, "diff_augment": ["color", "translation", "cutout"]}


@pytest.mark.parametrize(
    "train, d_model",
    [({"g_ema": 0.8}, {}), (STABILIZERS, {"d_spectral_norm": True})],
    ids=["ema", "stabilizers"],
)
def test_a_resumed_training_with_ema_saves_the_same_snapshots(tmp_path, make_params, train, d_model):
    """What the stabilizers hold (the average, spectral norm's vectors) is in the checkpoint,
    and their draws follow the iteration: grown and straight trainings are the same."""
    from cifar_dcgan import checkpoint

    model = make_params("model", **SMALL_MODEL, **d_model)
    short, longer = (make_params("train_gan", **tiny_training(epochs=n, **train)) for n in (2, 4))
    images = real_images()

    train = trainer(tmp_path, images, model)

    train(short, "grown")
    train(
        longer,
        "grown",
        checkpoint.load(tmp_path / "grown" / "ckpt", checkpoint.fingerprint(model, longer, images), 4),
    )
    train(longer, "straight")
    for epoch in (3, 4):
        grown, straight = (
            keras.models.load_model(tmp_path / name / "snap" / f"epoch_{epoch:03d}.keras")
            for name in ("grown", "straight")
        )
        for a, b in zip(grown.weights, straight.weights, strict=True):
            np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.slow
def test_the_classic_step_repeats_bit_for_bit_in_a_new_process():
    # at full size, with concurrent ops, the last bits of D's and G's float sums differed from
    # run to run by the third iteration; with Grappler's reordering of gradient sums, after
    # about a hundred (once TensorFlow's executor had timed the ops). A user rerunning a
    # config and seed gets the same run
    script, params = Path(__file__).with_name("repeat_run.py"), REPO / "params.yaml"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    digests = [
        subprocess.run(
            [sys.executable, str(script), str(params), "120"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()[-1]
        for _ in range(2)
    ]
    assert digests[0] == digests[1]


def test_training_images_are_held_as_their_pixels_and_restored_exactly():
    """A quarter of the memory for prepared data, the same values in the step; data that is
    not on prepare's pixel grid is held as given."""
    from cifar_dcgan.gan import from_held, held_images

    scaled = (synthetic_images(64).astype(np.float32) - 127.5) / 127.5
    held = held_images(scaled, nbytes=10 * scaled[0].nbytes)
    assert held.dtype == np.uint8 and held.nbytes * 4 == scaled.nbytes
    np.testing.assert_array_equal(from_held(tf.constant(held)).numpy(), scaled)
    every_pixel = np.arange(256, dtype=np.uint8)
    in_graph = tf.function(lambda pixels: from_held(pixels))(tf.constant(every_pixel))  # as in the step
    np.testing.assert_array_equal(in_graph.numpy(), (every_pixel.astype(np.float32) - 127.5) / 127.5)
    noise = np.random.default_rng(0).uniform(-1, 1, (8, 32, 32, 3)).astype(np.float32)
    assert held_images(noise).dtype == np.float32


def test_a_memory_mapped_training_set_is_read_in_chunks_to_the_same_pixels(tmp_path):
    from cifar_dcgan.gan import held_images

    scaled = (synthetic_images(50).astype(np.float32) - 127.5) / 127.5
    np.save(tmp_path / "train_images.npy", scaled)
    mapped = np.load(tmp_path / "train_images.npy", mmap_mode="r")
    held = held_images(mapped, nbytes=7 * scaled[0].nbytes)
    np.testing.assert_array_equal(held, held_images(scaled))
    noise = np.random.default_rng(0).uniform(-1, 1, (9, 4, 4, 1)).astype(np.float32)
    np.save(tmp_path / "noise.npy", noise)
    np.testing.assert_array_equal(
        held_images(np.load(tmp_path / "noise.npy", mmap_mode="r"), nbytes=64), noise
    )
