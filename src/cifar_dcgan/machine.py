"""The machine a training runs on, as its speed and last bits depend on it: the CPU's model
and vector units, the GPUs, whether TensorFlow has bf16 kernels of bf16 hardware, and what
`precision: auto` becomes here (`resolve_precision`, `dtype_policy`)."""

import collections
import contextlib
import os
import platform
from pathlib import Path

import keras
import tensorflow as tf


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


def gpu_visible() -> bool:
    """Whether TensorFlow sees a GPU: then its own kernels and graph rewrites are kept (the
    CPU-specific choices of `cifar_dcgan.kernels` and `training` were measured on CPUs only)."""
    return bool(tf.config.list_physical_devices("GPU"))


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
