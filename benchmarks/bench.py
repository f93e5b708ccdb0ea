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

import cifar_dcgan  # noqa: F401  first: it turns TensorFlow's oneDNN kernels on before TensorFlow loads

# isort: split
import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf
from bench_pipeline import dvc_noop, prepare_full
from bench_step import (
    classic_loop,
    cpu_name,
    forward_flops,
    interleaved,
    iteration_flops,
    matmul_gflops,
    project_step,
    snapshot_scoring,
    theoretical_peak,
)
from bench_tracking import compare_command, system_metrics_cost, tracking_cost

from cifar_dcgan.config import load_params
from cifar_dcgan.config.evaluator import EvaluatorParams
from cifar_dcgan.config.model import ModelParams
from cifar_dcgan.config.train_gan import TrainGanParams
from cifar_dcgan.machine import native_bf16

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iterations", type=int, default=12, help="timed iterations per variant per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--skip-pipeline", action="store_true", help="skip the prepare and dvc measurements")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    params = load_params(REPO / "params.yaml", ModelParams, TrainGanParams, EvaluatorParams)
    model, train = params["model"], params["train_gan"]
    images = np.random.default_rng(0).uniform(-1, 1, (2048, 32, 32, 3)).astype(np.float32)

    classic, d, g = classic_loop(model, train.latent_dim, images, train.batch_size, train.seed)
    flops = iteration_flops(forward_flops(d), forward_flops(g), train.batch_size)
    variants = {"classic loop": classic}
    tracing = {}
    for precision in ("float32", "mixed_bfloat16"):
        step, tracing[precision], _, _ = project_step(model, train, images, precision)
        variants[f"step {precision}"] = step
    matmul = {"float32": [], "bfloat16": []}

    def peaks():
        matmul["float32"].append(matmul_gflops(tf.float32))
        matmul["bfloat16"].append(matmul_gflops(tf.bfloat16))

    times = interleaved(variants, args.rounds, args.iterations, between=peaks)

    median_ms = {name: 1000 * statistics.median(t) for name, t in times.items()}
    fp32_peak, bf16_peak = max(matmul["float32"]), max(matmul["bfloat16"])
    theory, theory_how = theoretical_peak()
    results = {
        "machine": f"{cpu_name()}; TF {tf.__version__}",
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
    native = native_bf16()  # elsewhere the bf16 step sums in float32: float32's peak is its bound
    for name, ms in median_ms.items():
        peak = bf16_peak if "bfloat16" in name and native else fp32_peak
        achieved = flops / (ms / 1000) / 1e9
        print(
            f"| {name} | {ms:.0f} | {classic_ms / ms:.2f}x | {achieved:.0f} | {100 * achieved / peak:.0f}% |"
        )
    print(
        f"\nlarge matmul: fp32 {fp32_peak:.0f} GFLOP/s, bf16 {bf16_peak:.0f} GFLOP/s; "
        f"theoretical fp32 {theory:.0f} GFLOP/s ({theory_how})"
    )
    if not native:
        print("no bf16 kernels of bf16 hardware here: the bf16 step sums in float32; the fp32 peak bounds it")
    for label, peak in (("fp32", fp32_peak), ("bf16", bf16_peak))[: 2 if native else 1]:
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
