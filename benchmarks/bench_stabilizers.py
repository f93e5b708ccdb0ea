"""What each stabilizer costs per iteration: this project's float32 step with the classic
defaults against the same step with one stabilizer on (full-size models, batch 128).

    make bench-stabilizers          (python benchmarks/bench_stabilizers.py --iterations 8 --rounds 3)

The variants take turns round by round, in one process. Prints a Markdown table of median
ms per iteration and the ratio to the classic step; nothing is asserted. A trick's effect
on quality is the comparison's job (docs/comparing.md; the stabilizers' own in
docs/results/stabilizers.md); this says what it costs in time.
"""

import argparse
import dataclasses
import statistics
from pathlib import Path

import numpy as np
from bench_step import cpu_name, interleaved, project_step

from cifar_dcgan.config import load_params
from cifar_dcgan.config.model import ModelParams
from cifar_dcgan.config.train_gan import TrainGanParams

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {  # (model changes, train_gan changes): each stabilizer alone, then the combination
    # of docs/results/stabilizers.md
    "classic": ({}, {}),
    "model.d_spectral_norm": ({"d_spectral_norm": True}, {}),
    "loss hinge": ({}, {"loss": "hinge"}),
    "loss least_squares": ({}, {"loss": "least_squares"}),
    "d_steps 2": ({}, {"d_steps": 2}),
    "diff_augment color, translation, cutout": ({}, {"diff_augment": ("color", "translation", "cutout")}),
    "g_ema 0.999": ({}, {"g_ema": 0.999}),
    "combination: spectral norm, hinge, diff_augment, g_ema 0.999": (
        {"d_spectral_norm": True},
        {"loss": "hinge", "diff_augment": ("color", "translation", "cutout"), "g_ema": 0.999},
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iterations", type=int, default=8, help="timed iterations per variant per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="WORD",
        help="only the variants whose name has one of these words (classic always)",
    )
    args = parser.parse_args()
    chosen = {
        name: changes
        for name, changes in VARIANTS.items()
        if name == "classic" or not args.only or any(word in name for word in args.only)
    }
    params = load_params(REPO / "params.yaml", ModelParams, TrainGanParams)
    model, train = params["model"], params["train_gan"]
    images = np.random.default_rng(0).uniform(-1, 1, (2048, 32, 32, 3)).astype(np.float32)
    variants, tracing = {}, {}
    for name, (model_changes, train_changes) in chosen.items():
        step, tracing[name], _, _ = project_step(
            dataclasses.replace(model, **model_changes),
            dataclasses.replace(train, **train_changes),
            images,
            "float32",
        )
        variants[name] = step
    times = interleaved(variants, args.rounds, args.iterations)
    median_ms = {name: 1000 * statistics.median(t) for name, t in times.items()}
    print(
        f"\n{cpu_name()}; float32, batch {train.batch_size}, {args.rounds} x {args.iterations} iterations\n"
    )
    print("| stabilizer | median ms / iteration | vs classic step | first call (tracing) s |")
    print("|---|---|---|---|")
    for name, ms in median_ms.items():
        print(f"| {name} | {ms:.0f} | {ms / median_ms['classic']:.2f}x | {tracing[name]:.1f} |")


if __name__ == "__main__":
    main()
