"""Where one training iteration's time goes, by kind of operation, in each precision.

    make profile            (python benchmarks/profile_step.py --iterations 3)

For each precision, the project's compiled step (as `fit()` runs it, default architecture,
batch 128) is traced with TensorFlow's profiler over a few iterations after a warm-up. Every
TensorFlow op's time is summed by kind: conv forward, backprop-input and backprop-filter,
the same three for conv-transpose, dense, elementwise (activations, bias, dropout,
tanh/sigmoid, batch norm, casts), optimizer updates, random draws, gather, loss, other. The
kernel column says who ran the op: oneDNN (TensorFlow's `_Mkl` ops), TensorFlow's own Eigen
kernels, or XLA (the bf16 activations and biases, `cifar_dcgan.kernels.fast_kernels`). A
second pass, run with `ONEDNN_VERBOSE=1`, lists the oneDNN implementation of each primitive
(AMX, avx512_core_bf16, avx2, a reference kernel ...); it is empty where
TensorFlow does not use oneDNN. TensorFlow turns oneDNN on by itself only on CPUs with
AVX-512 VNNI/BF16 or AMX; this project turns it on everywhere (`TF_ENABLE_ONEDNN_OPTS=0`
profiles TensorFlow's own kernels instead). Ops run one at a time, as `train-gan` runs them:
two at once would each be timed with the other's work on the same cores (a layout conversion
that takes 0.4 ms alone was timed at 51 ms beside a convolution), and the op times add up
to about the wall time; the shares are of their sum.

With bf16 among the precisions, a third table says how each kind of bf16 kernel sums: its
relative error against float64 on the same bf16 inputs, over the error of rounding the
exact result to bf16 (what a kernel that sums in float32, as oneDNN's bf16 kernels do,
cannot avoid). About 1x: float32 sums; many times more: the kernel sums in bf16. Where
TensorFlow has no bf16 kernels of bf16 hardware (no GPU, a CPU without AVX-512 bf16 or AMX)
the step does not run these: its bf16 convolutions, conv-transposes and dense layers sum in
float32 instead (`cifar_dcgan.kernels.fast_kernels`), and the table says so. Prints
Markdown; nothing is asserted.
"""

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
KINDS = (
    "conv forward", "conv backprop-input", "conv backprop-filter",
    "conv-transpose forward", "conv-transpose backprop-input", "conv-transpose backprop-filter",
    "dense", "elementwise", "optimizer updates", "random draws", "gather", "loss", "other",
)  # fmt: skip
ELEMENTWISE = re.compile(
    r"LeakyRelu|Relu|BiasAdd|Tanh|Sigmoid|Cast|Mul|Add|Sub|RealDiv|Div|Select|Maximum|Minimum|"
    r"BatchNorm|Rsqrt|Square|Sqrt|Neg|Exp|Log|Greater|Less|Equal|Floor|ClipByValue|Pow|Sum"
)
XLA_KERNEL = re.compile(r"fusion|^(convert|select|add|multiply|copy)(\.\d+)?$")  # XLA's CPU kernels


def kind(name: str, op: str) -> str:
    """The kind of a TensorFlow op from its name (the layer path) and type."""
    # oneDNN's ops: _MklConv2D, _MklNativeFusedConv2D (conv + bias + activation in one), ...
    op = op.removeprefix("_MklNative").removeprefix("_Mkl").removeprefix("_").removeprefix("Fused")
    backward = "gradient_tape" in name
    if "conv_transpose" in name and op.startswith("Conv2D"):
        if not backward:
            return "conv-transpose forward"  # a conv-transpose is computed as Conv2DBackpropInput
        return "conv-transpose backprop-filter" if "Filter" in op else "conv-transpose backprop-input"
    if re.search(r"conv2d(?!_transpose)", name) and op.startswith("MatMul"):  # a thin conv (fast_kernels)
        if not backward:
            return "conv forward"
        return "conv backprop-filter" if name.endswith("MatMul_1") else "conv backprop-input"  # dW: MatMul_1
    if op.startswith("Conv2D"):
        if "BackpropFilter" in op:
            return "conv backprop-filter"
        return "conv backprop-input" if "BackpropInput" in op else "conv forward"
    lowered = name.lower()
    if re.search(r"(^|/)(adam|optimizer)", lowered) or op.startswith("ResourceApply"):
        return "optimizer updates"
    if "Random" in op:
        return "random draws"
    if "Gather" in op:
        return "gather"
    if "crossentropy" in lowered or "loss" in lowered:
        return "loss"
    if op.startswith(("MatMul", "BatchMatMul")):
        return "dense"
    if ELEMENTWISE.search(op):
        return "elementwise"
    return "other"


def profile(precision: str, iterations: int) -> tuple[dict[str, float], dict[str, str], float]:
    """(ms per iteration by kind, kernel by kind, wall ms per iteration) of the step in `precision`."""
    import tensorflow as tf
    from bench_step import project_step
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    from cifar_dcgan.config import load_params
    from cifar_dcgan.config.model import ModelParams
    from cifar_dcgan.config.train_gan import TrainGanParams

    params = load_params(REPO / "params.yaml", ModelParams, TrainGanParams)
    images = np.random.default_rng(0).uniform(-1, 1, (2048, 32, 32, 3)).astype(np.float32)
    iteration, _, _, _ = project_step(params["model"], params["train_gan"], images, precision)
    iteration()  # warm-up beyond tracing
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        start = time.perf_counter()
        for _ in range(iterations):
            iteration()
        wall = (time.perf_counter() - start) * 1000 / iterations
        tf.profiler.experimental.stop()
        (path,) = Path(logdir).rglob("*.xplane.pb")
        space = xplane_pb2.XSpace.FromString(path.read_bytes())
    totals, kernels = collections.Counter(), collections.defaultdict(set)
    for plane in space.planes:
        names = {key: meta.name for key, meta in plane.event_metadata.items()}
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                full = names.get(event.metadata_id, "")
                name, _, op = full.rpartition(":")
                if XLA_KERNEL.search(full):  # an XLA kernel (bf16 activations and biases, fast_kernels)
                    totals["elementwise"] += event.duration_ps / 1e9 / iterations
                    kernels["elementwise"].add("XLA")
                    continue
                if not name or "::" in full or " " in op:
                    continue  # executor bookkeeping (ExecutorState::Process, ...), not an op
                category = kind(name, op)
                totals[category] += event.duration_ps / 1e9 / iterations
                kernels[category].add("oneDNN" if op.startswith("_Mkl") else "Eigen")
    return dict(totals), {k: "+".join(sorted(v)) for k, v in kernels.items()}, wall


def onednn_implementations(precision: str) -> dict[tuple[str, str, str, str], float]:
    """(primitive, implementation, propagation, source dtype) -> ms over one iteration, from
    oneDNN's own verbose log (`gemm_api`: a matrix product TensorFlow's Eigen kernels hand to
    oneDNN; a conv-transpose's forward pass is a convolution's backward_data)."""
    env = {**os.environ, "ONEDNN_VERBOSE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, __file__, "--verbose-iteration", precision]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    timed = result.stdout.partition("=== timed ===")[2]
    found = collections.Counter()
    for line in timed.splitlines():
        fields = line.split(",")
        if line.startswith("onednn_verbose") and "exec" in fields:
            at = fields.index("exec")
            dtype = re.search(r"src[_:]([a-z0-9]+)", line)  # src:bf16::blocked... (oneDNN 3)
            propagation = fields[at + 4] if fields[at + 4] not in ("", "undef") else "-"
            key = (fields[at + 2], fields[at + 3] or "-", propagation, dtype.group(1) if dtype else "?")
            found[key] += float(fields[-1])
    return dict(found)


def bf16_numerics(batch: int = 32) -> dict[str, tuple[float, float]]:
    """kind -> (relative error of the bf16 kernel, relative error of the exact result rounded to
    bf16), each against float64 on the same bf16-rounded inputs, at the default model's shapes:
    D's second conv (32x32x64 -> 16x16x128, 3x3 stride 2), G's last conv-transpose (16x16x128
    -> 32x32x128, 4x4 stride 2) and G's dense layer (100 -> 4x4x256; D's runs in float32),
    as the step runs them: TensorFlow ops in a tf.function, where oneDNN's rewrites apply."""
    import tensorflow as tf
    from tensorflow.python.ops import gen_nn_ops

    conv = tf.compat.v1.nn
    rng = np.random.default_rng(0)

    def draw(*shape):  # float64 values that bf16 holds exactly
        bf16 = tf.cast(rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:])), tf.bfloat16)
        return tf.cast(bf16, tf.float64)

    s2, same = [1, 2, 2, 1], "SAME"
    ops = {  # kind: (op(a, b), a, b); the conv-transpose forward is TF's Conv2DBackpropInput
        "conv forward": (
            lambda x, w: tf.nn.conv2d(x, w, s2, same),
            draw(batch, 32, 32, 64),
            draw(3, 3, 64, 128),
        ),
        "conv backprop-input": (
            lambda dy, w: conv.conv2d_backprop_input([batch, 32, 32, 64], w, dy, s2, same),
            draw(batch, 16, 16, 128),
            draw(3, 3, 64, 128),
        ),
        "conv backprop-filter": (
            lambda x, dy: conv.conv2d_backprop_filter(x, [3, 3, 64, 128], dy, s2, same),
            draw(batch, 32, 32, 64),
            draw(batch, 16, 16, 128),
        ),
        "conv-transpose forward": (
            lambda x, w: tf.nn.conv2d_transpose(x, w, [batch, 32, 32, 128], s2, same),
            draw(batch, 16, 16, 128),
            draw(4, 4, 128, 128),
        ),
        "conv-transpose backprop-input": (
            lambda dy, w: tf.nn.conv2d(dy, w, s2, same),
            draw(batch, 32, 32, 128),
            draw(4, 4, 128, 128),
        ),
        "conv-transpose backprop-filter": (
            lambda dy, x: conv.conv2d_backprop_filter(dy, [4, 4, 128, 128], x, s2, same),
            draw(batch, 32, 32, 128),
            draw(batch, 16, 16, 128),
        ),
        "dense": (tf.matmul, draw(batch * 4, 100), draw(100, 4 * 4 * 256)),
        # a conv-transpose's bias gradient (G's last, 32 x 32 x 128): TensorFlow's op, and the
        # float32-accumulated sum the models use instead (cifar_dcgan.kernels._bias_add)
        "bias gradient, TensorFlow's BiasAddGrad": (
            lambda dy, _: gen_nn_ops.bias_add_grad(dy),
            draw(batch, 32, 32, 128),
            draw(1),
        ),
        "bias gradient, tf.reduce_sum (the models')": (
            lambda dy, _: tf.reduce_sum(dy, [0, 1, 2]),
            draw(batch, 32, 32, 128),
            draw(1),
        ),
    }
    found = {}
    for name, (op, a, b) in ops.items():
        exact = tf.function(op)(a, b)
        kernel = tf.cast(tf.function(op)(tf.cast(a, tf.bfloat16), tf.cast(b, tf.bfloat16)), tf.float64)
        rounded = tf.cast(tf.cast(tf.cast(exact, tf.float32), tf.bfloat16), tf.float64)
        norm = float(tf.norm(exact))
        found[name] = (float(tf.norm(kernel - exact)) / norm, float(tf.norm(rounded - exact)) / norm)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iterations", type=int, default=3, help="profiled iterations per precision")
    parser.add_argument("--precisions", nargs="+", default=["float32", "mixed_bfloat16"])
    parser.add_argument("--verbose-iteration", metavar="PRECISION", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_step import cpu_name, project_step

    from cifar_dcgan.machine import native_bf16
    from cifar_dcgan.training import make_strategy

    make_strategy("none")  # one op at a time, as train-gan runs them: an op's time is then its own

    if args.verbose_iteration:  # the ONEDNN_VERBOSE pass: warm up, then one marked iteration
        from cifar_dcgan.config import load_params
        from cifar_dcgan.config.model import ModelParams
        from cifar_dcgan.config.train_gan import TrainGanParams

        params = load_params(REPO / "params.yaml", ModelParams, TrainGanParams)
        images = np.random.default_rng(0).uniform(-1, 1, (2048, 32, 32, 3)).astype(np.float32)
        iteration, *_ = project_step(params["model"], params["train_gan"], images, args.verbose_iteration)
        iteration()
        print("=== timed ===", flush=True)
        iteration()
        return

    results = {p: profile(p, args.iterations) for p in args.precisions}
    print(f"\n{cpu_name()}; ms per iteration, one op at a time\n")
    print("| kind | " + " | ".join(f"{p} ms | share | kernel" for p in args.precisions) + " |")
    print("|---|" + "---|---|---|" * len(args.precisions))
    for category in KINDS:
        cells = []
        for totals, kernels, _ in results.values():
            share = totals.get(category, 0.0) / max(sum(totals.values()), 1e-9)
            cells.append(f"{totals.get(category, 0.0):.1f} | {share:.0%} | {kernels.get(category, '-')}")
        print(f"| {category} | " + " | ".join(cells) + " |")
    print(
        "| **summed op time** | "
        + " | ".join(f"{sum(t.values()):.1f} | | " for t, _, _ in results.values())
        + " |"
    )
    print("| **wall time** | " + " | ".join(f"{w:.1f} | | " for _, _, w in results.values()) + " |")
    for precision in args.precisions:
        found = onednn_implementations(precision)
        print(f"\noneDNN primitives in one {precision} iteration (ONEDNN_VERBOSE):")
        if not found:
            print("  none: TensorFlow ran every op with its own kernels (TF_ENABLE_ONEDNN_OPTS=0)")
        for (primitive, implementation, propagation, dtype), ms in sorted(found.items(), key=lambda x: -x[1]):
            print(f"  {primitive:<14} {implementation:<58} {propagation:<17} {dtype:<5} {ms:8.1f} ms")
    if "mixed_bfloat16" in args.precisions:
        print(
            "\nHow the bf16 kernels sum (relative error against float64 on the same bf16 inputs;"
            " 1x the rounding floor: float32 sums, as bf16 hardware's)\n"
        )
        print("| kind | bf16 kernel's error | rounding floor | kernel / floor |")
        print("|---|---|---|---|")
        for category, (error, floor) in bf16_numerics().items():
            print(f"| {category} | {error:.2e} | {floor:.2e} | {error / floor:.1f}x |")
        if not native_bf16():
            print(
                "\nThis machine has no bf16 kernels of bf16 hardware: the step runs none of these. Its"
                " bf16 convolutions, conv-transposes and dense layers sum their bf16 operands in float32"
                " and round to bf16 (1x by construction; tests/test_gan.py measures them)."
            )


if __name__ == "__main__":
    main()
