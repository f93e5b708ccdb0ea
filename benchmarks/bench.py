"""Speed of the training step against the classic Keras GAN loop and this machine's peak.

    make bench                      (python benchmarks/bench.py --iterations 12 --rounds 3)

Measured in one process, the variants interleaved round by round so that drift on a
shared machine hits all of them alike:
- classic: `train_on_batch` on D (real half-batch), `generator.predict` + `train_on_batch`
  on D (fake half-batch), `train_on_batch` on the composite G+D model, with the per-call
  `trainable` toggling that makes the pattern train D in Keras 3 (checked below);
- step: this project's compiled `DCGAN.train_step` as `fit()` runs it, float32 and bf16;
- large-matmul fp32/bf16 throughput (the practical peak) and the theoretical peak;
- MLflow tracking cost per iteration; scoring one snapshot (FCD, KID, ...) at the default
  `fcd_samples`; `prepare` on the full archive; a no-op `dvc repro`;
- the bound the measured peaks put on any step doing the same FLOPs.
Prints a Markdown table; nothing is asserted.
"""

import argparse
import dataclasses
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
import yaml

from cifar_dcgan import evaluator
from cifar_dcgan.config import load_params
from cifar_dcgan.gan import DCGAN
from cifar_dcgan.models import adam, build_discriminator, build_generator, dtype_policy, latent_points
from cifar_dcgan.tracking import MlflowTracker, NullTracker

REPO = Path(__file__).resolve().parents[1]
MIRROR_TOOL = REPO.parent / "shared" / "tools" / "cifar10-mirror"
# per core: two 512-bit FMA pipes x 16 fp32 lanes x 2 FLOP (Zen 5 / recent Xeon); Zen 4 has half
FP32_FLOP_PER_CYCLE = 64


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
    d = build_discriminator(model_params, seed)
    g = build_generator(model_params, latent_dim, seed)
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
    """This project's step, as `fit()` calls it; returns (one-iteration function, tracing seconds)."""
    params = dataclasses.replace(train_params, precision=precision)
    keras.utils.set_random_seed(params.seed)
    with dtype_policy(precision):
        d = build_discriminator(model_params, params.seed)
        g = build_generator(model_params, params.latent_dim, params.seed)
    gan = DCGAN(d, g, tf.constant(images), params, steps_per_epoch=len(images) // params.batch_size)
    gan.compile(adam(2e-4, 0.5, precision), adam(2e-4, 0.5, precision))
    from cifar_dcgan.training import real_index_batches

    iterator = iter(real_index_batches(len(images), params.batch_size // 2, "random", params.seed))
    gan.make_train_function()
    train_function = gan.train_function

    def iteration():
        logs = train_function(iterator)
        float(logs["g"])  # wait for the result, as the progress bar does

    start = time.perf_counter()
    iteration()
    return iteration, time.perf_counter() - start, d, g


def matmul_gflops(dtype, n: int = 4096, repeats: int = 10) -> float:
    a = tf.random.normal((n, n), dtype=tf.float32)
    a = tf.cast(a, dtype)
    f = tf.function(lambda x: tf.matmul(x, x))
    f(a).numpy()
    start = time.perf_counter()
    for _ in range(repeats):
        f(a).numpy()
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def _cpu_name() -> str:
    names = [line.split(":")[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")]
    return names[0] if names else platform.machine()


def theoretical_peak() -> tuple[float, str]:
    mhz = [float(line.split(":")[1]) for line in open("/proc/cpuinfo") if line.startswith("cpu MHz")]
    cores = os.cpu_count() or 1
    ghz = max(mhz) / 1000 if mhz else float("nan")
    return (
        cores * FP32_FLOP_PER_CYCLE * ghz,
        f"{cores} cores x {FP32_FLOP_PER_CYCLE} FLOP/cycle x {ghz:.2f} GHz nominal; boost clocks go higher",
    )


def tracking_cost(steps_per_epoch: int = 390, epochs: int = 20, snapshot_every: int = 10) -> dict[str, float]:
    """Time the training thread spends in tracking calls for `epochs` epochs of `steps_per_epoch`
    iterations at the default params: per epoch 3 loss histories and 3 means, per snapshot
    two accuracies and a grid image."""
    from mlflow import MlflowClient

    folder = Path(tempfile.mkdtemp())
    try:
        client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
        run = client.create_run(client.create_experiment("bench", (folder / "art").as_uri()))
        results = {}
        for name, tracker in (("off", NullTracker()), ("on", MlflowTracker(client, run.info.run_id, "x"))):
            grid = np.random.default_rng(0).uniform(0, 1, (240, 240, 3)).astype(np.float32)
            start = time.perf_counter()
            for epoch in range(1, epochs + 1):
                history = np.random.default_rng(epoch).uniform(0, 2, (steps_per_epoch, 3))
                for i, key in enumerate(("d1", "d2", "g")):
                    tracker.log_history(key, history[:, i], (epoch - 1) * steps_per_epoch + 1)
                tracker.log_metrics({"epoch_d1": 1.0, "epoch_d2": 1.0, "epoch_g": 1.0}, step=epoch)
                if epoch % snapshot_every == 0:
                    tracker.log_metrics({"acc_real": 0.5, "acc_fake": 0.5}, step=epoch)
                    tracker.log_image(grid, key="generated", step=epoch)
            training_thread = time.perf_counter() - start
            tracker.flush()
            results[name] = training_thread
            results[f"{name}_flush"] = time.perf_counter() - start - training_thread
        per_iteration = (results["on"] - results["off"]) / (steps_per_epoch * epochs)
        return {"ms_per_iteration": 1000 * per_iteration, "flush_s": results["on_flush"]}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def system_metrics_cost(seconds: float = 40.0) -> dict[str, float]:
    """CPU time MLflow's system-metrics sampler (what train-gan and train-evaluator start, every
    10 s) takes, measured on an otherwise idle process: its share of one core."""
    from mlflow import MlflowClient
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    folder = Path(tempfile.mkdtemp())
    try:
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        client = MlflowClient(uri)
        run = client.create_run(client.create_experiment("bench", (folder / "art").as_uri()))
        cpu, wall = time.process_time(), time.perf_counter()
        monitor = SystemMetricsMonitor(run.info.run_id, tracking_uri=uri)
        monitor.start()
        time.sleep(seconds)
        monitor.finish()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        samples = len(client.get_metric_history(run.info.run_id, "system/cpu_utilization_percentage"))
        return {"core_share": cpu / wall, "cpu_s": cpu, "wall_s": wall, "samples": samples}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def snapshot_scoring(model_params, train_params, evaluator_params) -> float:
    """Seconds to generate `fcd_samples` images and score them with a default-size
    evaluator (its weights do not change the cost), as train-gan does at each snapshot."""
    generator = build_generator(model_params, train_params.latent_dim, train_params.seed)
    judge = evaluator.extractor(evaluator.build_classifier(evaluator_params, 0))
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


def prepare_full(workdir: Path) -> dict[str, float] | None:
    if not MIRROR_TOOL.exists():
        return None
    archive = workdir / "cifar-10-python.tar.gz"
    built = subprocess.run(
        [sys.executable, str(MIRROR_TOOL), str(archive)], capture_output=True, text=True, check=True
    )
    md5 = built.stdout.split()[0]
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["prepare"].update(url=str(archive), md5=md5)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}"}
    # run the stage in a child that reports its own peak resident memory (VmHWM) on exit;
    # ru_maxrss would not do: Linux carries it over from this big parent across fork + exec
    wrapper = (
        "import re, runpy, sys\nsys.argv = sys.argv[1:]\ntry:\n"
        "    runpy.run_path(sys.argv[0], run_name='__main__')\nfinally:\n"
        "    hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)\n"
        "    print('MAXRSS', hwm, file=sys.stderr)"
    )

    start = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            wrapper,
            str(REPO / "stages" / "prepare.py"),
            "--out",
            "data",
            "--reports",
            "rep",
        ],
        cwd=workdir,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    peak_mb = int(done.stderr.split("MAXRSS")[-1].split()[0]) / 1024
    output_mb = sum(p.stat().st_size for p in (workdir / "data").iterdir()) / 2**20
    return {"seconds": seconds, "peak_mb": peak_mb, "output_mb": output_mb}


def dvc_noop(workdir: Path) -> float | None:
    """Median seconds of `dvc repro` with nothing to do, on a pipeline that has run once (tiny data)."""
    project = workdir / "project"
    project.mkdir()
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(REPO / name, project / name)
    for folder in ("stages", "src", ".dvc"):
        shutil.copytree(
            REPO / folder, project / folder, ignore=shutil.ignore_patterns("__pycache__", "tmp", "cache")
        )
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import official_members, tiny_training, write_archive

    md5 = write_archive(workdir / "a.tar.gz", official_members())
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["prepare"].update(url=str(workdir / "a.tar.gz"), md5=md5, limit=64)
    params["train_gan"].update(tiny_training())
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "PYTHONPATH": str(project / "src"),
    }
    for cmd in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "b"],
        ["dvc", "repro", "-q"],
    ):
        done = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    times = []
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run(["dvc", "repro", "-q"], cwd=project, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def compare_command(runs: int = 50, epochs: int = 20) -> float:
    """Seconds `cifar-dcgan-compare` takes, as a whole command, on `runs` finished training
    runs of `epochs` scored snapshots each (5 configurations x 10 seeds) in a SQLite store."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    folder = Path(tempfile.mkdtemp())
    try:
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        client = MlflowClient(uri)
        experiment = client.create_experiment("cifar10-dcgan", (folder / "art").as_uri())
        rng = np.random.default_rng(0)
        keys = ("fcd", "kid", "class_entropy", "diversity", "epoch_seconds", "seconds_per_iteration")
        for i in range(runs):
            tags = {"stage": "train-gan", "evaluator_digest": "bench"}
            run = client.create_run(experiment, run_name=f"r{i}/train-gan", tags=tags)
            params = {"train_gan.seed": str(i % 10), "train_gan.label_smoothing": str(i // 10 / 10)}
            metrics = [Metric(k, float(rng.uniform(1, 50)), 0, e) for k in keys for e in range(1, epochs + 1)]
            client.log_batch(
                run.info.run_id, metrics=metrics, params=[Param(k, v) for k, v in params.items()]
            )
            client.set_terminated(run.info.run_id)
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
        command = [str(Path(sys.executable).parent / "cifar-dcgan-compare"), "--out", str(folder / "out")]
        start = time.perf_counter()
        subprocess.run(command, cwd=REPO, env=env, check=True, capture_output=True)
        return time.perf_counter() - start
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iterations", type=int, default=12, help="timed iterations per variant per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--skip-pipeline", action="store_true", help="skip the prepare and dvc measurements")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    params = load_params(REPO / "params.yaml", "model", "train_gan", "train_evaluator")
    model, train = params["model"], params["train_gan"]
    images = np.random.default_rng(0).uniform(-1, 1, (2048, 32, 32, 3)).astype(np.float32)

    classic, d, g = classic_loop(model, train.latent_dim, images, train.batch_size, train.seed)
    flops = iteration_flops(forward_flops(d), forward_flops(g), train.batch_size)
    variants = {"classic loop": classic}
    tracing = {}
    for precision in ("float32", "mixed_bfloat16"):
        step, tracing[precision], _, _ = project_step(model, train, images, precision)
        variants[f"step {precision}"] = step
    times = {name: [] for name in variants}
    matmul = {"float32": [], "bfloat16": []}
    for _ in range(args.rounds):
        for name, iteration in variants.items():
            iteration()  # untimed: settle caches after switching variant
            for _ in range(args.iterations):
                start = time.perf_counter()
                iteration()
                times[name].append(time.perf_counter() - start)
        matmul["float32"].append(matmul_gflops(tf.float32))
        matmul["bfloat16"].append(matmul_gflops(tf.bfloat16))

    median_ms = {name: 1000 * statistics.median(t) for name, t in times.items()}
    fp32_peak, bf16_peak = max(matmul["float32"]), max(matmul["bfloat16"])
    theory, theory_how = theoretical_peak()
    results = {
        "machine": f"{_cpu_name()}, {os.cpu_count()} cores, TF {tf.__version__}",
        "iteration_gflop": flops / 1e9,
        "median_ms": median_ms,
        "tracing_s": tracing,
        "matmul_gflops": {"float32": fp32_peak, "bfloat16": bf16_peak},
        "theoretical_fp32_gflops": theory,
        "tracking": tracking_cost(),
        "system_metrics": system_metrics_cost(),
        "compare_50_runs_s": compare_command(),
        "snapshot_scoring_s": snapshot_scoring(model, train, params["train_evaluator"]),
    }
    if not args.skip_pipeline:
        with tempfile.TemporaryDirectory() as workdir:
            results["prepare"] = prepare_full(Path(workdir))
        with tempfile.TemporaryDirectory() as workdir:
            results["dvc_repro_noop_s"] = dvc_noop(Path(workdir))

    classic_ms = median_ms["classic loop"]
    print(f"\n{results['machine']}; one iteration = {flops / 1e9:.1f} GFLOP (batch {train.batch_size})\n")
    print("| variant | median ms / iteration | speed-up vs classic | achieved GFLOP/s | % of measured peak |")
    print("|---|---|---|---|---|")
    for name, ms in median_ms.items():
        peak = bf16_peak if "bfloat16" in name else fp32_peak
        achieved = flops / (ms / 1000) / 1e9
        print(
            f"| {name} | {ms:.0f} | {classic_ms / ms:.2f}x | {achieved:.0f} | {100 * achieved / peak:.0f}% |"
        )
    print(
        f"\nlarge matmul: fp32 {fp32_peak:.0f} GFLOP/s, bf16 {bf16_peak:.0f} GFLOP/s; "
        f"theoretical fp32 {theory:.0f} GFLOP/s ({theory_how})"
    )
    for label, peak in (("fp32", fp32_peak), ("bf16", bf16_peak)):
        bound_ms = flops / (peak * 1e9) * 1000
        print(
            f"{label} bound: at the measured {label} matmul peak one iteration needs at least "
            f"{bound_ms:.0f} ms, so a step doing these FLOPs is at most {classic_ms / bound_ms:.2f}x "
            "the classic loop"
        )
    print("first call (tracing): " + ", ".join(f"{k} {v:.1f} s" for k, v in tracing.items()))
    cost = results["tracking"]["ms_per_iteration"]
    step_ms = median_ms["step float32"]
    print(
        f"MLflow tracking on the training thread: {cost:.3f} ms / iteration = "
        f"{100 * cost / step_ms:.2f}% of a "
        f"{step_ms:.0f} ms step, {100 * cost / 5:.1f}% of a 5 ms (GPU) step; "  # noqa: E501
        f"final flush {results['tracking']['flush_s']:.2f} s"
    )
    sampler = results["system_metrics"]
    print(
        f"MLflow system metrics (sampled every 10 s): {sampler['cpu_s']:.2f} CPU-s in "
        f"{sampler['wall_s']:.0f} s "
        f"({sampler['samples']} samples) = {100 * sampler['core_share']:.2f}% of one core, "
        f"{100 * sampler['core_share'] / os.cpu_count():.2f}% of the machine's {os.cpu_count()} cores"
    )
    print(
        f"cifar-dcgan-compare on 50 runs of 20 snapshots: {results['compare_50_runs_s']:.1f} s "
        "(the whole command)"
    )
    scoring = results["snapshot_scoring_s"]
    epoch_s = step_ms / 1000 * (50_000 // train.batch_size)
    print(
        f"scoring one snapshot ({train.fcd_samples} generated images: FCD, KID, class score, ...): "
        f"{scoring:.1f} s = {100 * scoring / (epoch_s * train.snapshot_every):.2f}% of the "
        f"{train.snapshot_every} float32 epochs between snapshots ({epoch_s:.0f} s each on 50,000 images)"
    )
    if results.get("prepare"):
        p = results["prepare"]
        print(
            f"prepare, full archive: {p['seconds']:.1f} s, peak RSS {p['peak_mb']:.0f} MB for "
            f"{p['output_mb']:.0f} MB of output ({p['peak_mb'] / p['output_mb']:.2f}x)"
        )
    if results.get("dvc_repro_noop_s") is not None:
        print(f"dvc repro with nothing to do: {results['dvc_repro_noop_s']:.2f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
