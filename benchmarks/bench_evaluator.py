"""Where `train-evaluator`'s time goes: a training batch with and without augmentation, the
test-split pass fit() makes after each epoch, and the stage's outputs (features of the test
split and of the real reference images), for the params.yaml evaluator and its variants.

    make bench-evaluator        (python benchmarks/bench_evaluator.py --batches 6 --rounds 3)

The variants take turns round by round, in one process, on random images (the cost does
not depend on the pixels). The projected minutes are epochs x (batches x ms per batch +
test pass) + outputs, for 50,000 training and 10,000 test images; the stage itself logs
what it took (`train_minutes` in reports/train_evaluator/reference.json). Prints Markdown;
nothing is asserted.
"""

import argparse
import dataclasses
import math
import statistics
import time
from pathlib import Path

import numpy as np
from bench_step import cpu_name, interleaved

from cifar_dcgan import evaluator
from cifar_dcgan.config import TEST_IMAGES, TRAIN_IMAGES, load_params
from cifar_dcgan.config.evaluator import EvaluatorParams

REPO = Path(__file__).resolve().parents[1]


def variants(params) -> dict[str, dict]:
    """params.yaml's evaluator, then what each of its costs is: augmentation off, the other
    pooling layout, the other precision (bf16 pays only with bf16 units: `precision: auto`)."""
    other_pool = "between" if params.pool == "after" else "after"
    other_precision = "float32" if params.precision == "mixed_bfloat16" else "mixed_bfloat16"
    return {
        "params.yaml": {},
        "augment off": {"augment": False},
        f"pool {other_pool}": {"pool": other_pool},
        other_precision: {"precision": other_precision},
    }


def seconds_per_pass(model, images: np.ndarray, repeats: int = 3) -> float:
    """The fastest of `repeats` predictions over `images` (the first call traces)."""
    model.predict(images[:500], batch_size=500, verbose=0)
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.predict(images, batch_size=500, verbose=0)
        timings.append(time.perf_counter() - start)
    return min(timings)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, default=6, help="timed training batches per variant per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    args = parser.parse_args()
    params = load_params(REPO / "params.yaml", EvaluatorParams)["train_evaluator"]
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (TEST_IMAGES, 32, 32, 3)).astype(np.float32)
    labels = rng.integers(0, evaluator.CLASSES, len(images))
    batch = images[: params.batch_size], labels[: params.batch_size]
    steps = math.ceil(TRAIN_IMAGES / params.batch_size)
    models, steps_fn = {}, {}
    for name, changes in variants(params).items():
        models[name] = evaluator.compiled_classifier(
            dataclasses.replace(params, **changes), steps, (32, 32, 3), 10, flip=True
        )
        steps_fn[name] = lambda model=models[name]: model.train_on_batch(*batch)
    times = interleaved(steps_fn, args.rounds, args.batches)
    print(
        f"\n{cpu_name()}; {params.precision}, batch {params.batch_size}, {params.epochs} epochs, "
        f"{args.rounds} x {args.batches} batches\n"
    )
    print(
        "| evaluator | ms / batch | train s / epoch | test pass s / epoch | outputs s | projected stage min |"
    )
    print("|---|---|---|---|---|---|")
    for name, model in models.items():
        ms = 1000 * statistics.median(times[name])
        test_pass = seconds_per_pass(model, images)
        outputs = 2 * test_pass  # features of the test split and of as many real training images
        epoch = steps * ms / 1000
        total = params.epochs * (epoch + test_pass) + outputs
        print(f"| {name} | {ms:.0f} | {epoch:.0f} | {test_pass:.1f} | {outputs:.0f} | {total / 60:.1f} |")


if __name__ == "__main__":
    main()
