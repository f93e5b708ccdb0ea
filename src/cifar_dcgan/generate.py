"""Use a trained generator: sample images, a grid, one image from a constant latent vector,
or an interpolation strip between two latent points.

    cifar-dcgan-generate --model models/generator.keras --grid samples.png --n 49 --seed 3
    cifar-dcgan-generate --model models:/cifar10-dcgan-generator@champion --out-dir images --n 10
    cifar-dcgan-generate --constant 0.75 --grid one.png --n 1
    cifar-dcgan-generate --interpolate slerp --steps 10 --grid strip.png

(`python -m cifar_dcgan.generate` works the same.) Models are loaded with Keras' safe mode.
"""

import argparse
import contextlib
import functools
import math
import os
import sys
import tempfile
from collections.abc import Iterator
from math import isqrt
from pathlib import Path

import numpy as np

from cifar_dcgan.errors import PipelineError, run_stage
from cifar_dcgan.images import save_grid, to_unit

CHUNK = 1000  # images generated and written at a time: memory stays flat for any --n
MAX_GRID = 1024  # images one grid picture shows (32 x 32 tiles, ~4,400 pixels square)
START_UP_NOTICES = ("absl::InitializeLog() is called", "oneDNN custom operations are on")


@contextlib.contextmanager
def start_up_notices_dropped():
    """While TensorFlow loads it writes its oneDNN notice (and absl's note on it) straight to
    the stderr file descriptor, whatever TF_CPP_MIN_LOG_LEVEL says: hold that descriptor in
    a file meanwhile, then pass on every other line."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            for line in held.read().decode(errors="replace").splitlines(keepends=True):
                if not any(notice in line for notice in START_UP_NOTICES):
                    sys.stderr.write(line)


def open_generator(uri: str, allow_unsafe: bool = False):
    """A Keras generator from a `.keras` file or an MLflow `models:/name@alias` URI (only the
    native `.keras` file this project registers, checked against its sha256 tag). Keras' safe
    mode refuses files whose layers carry Python code (Lambda) unless `allow_unsafe`."""
    from cifar_dcgan.kernels import fast_kernels
    from cifar_dcgan.models import load_model  # TensorFlow loads here

    if uri.startswith(("models:/", "runs:/")):
        from cifar_dcgan.registry import load_generator
        from cifar_dcgan.store import tracking_uri

        return fast_kernels(load_generator(uri, tracking_uri(), allow_unsafe))
    path = Path(uri)
    if not path.is_file():
        raise PipelineError(
            f"model file not found: {path}; run `make repro` (or `dvc repro select-generator`) first"
        )
    try:
        return load_model(path, safe_mode=not allow_unsafe)
    except ValueError as error:
        if "safe_mode" not in str(error):
            raise PipelineError(f"cannot load {path}: {str(error).splitlines()[0]}") from None
        raise PipelineError(
            f"refusing to load {path}: it contains a Lambda layer, i.e. code that would run on "
            "loading; pass --allow-unsafe only if you trust where the file came from"
        ) from None


def slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Spherical interpolation: stays at the norm Gaussian latent points typically have."""
    omega = np.arccos(np.clip(np.dot(a / np.linalg.norm(a), b / np.linalg.norm(b)), -1.0, 1.0))
    if np.isclose(np.sin(omega), 0.0):
        return (1.0 - t) * a + t * b
    return (np.sin((1.0 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)


def interpolate(a: np.ndarray, b: np.ndarray, steps: int, method: str) -> np.ndarray:
    """(steps, latent_dim) points from a to b, both ends included."""
    ts = np.linspace(0.0, 1.0, steps)
    if method == "slerp":
        return np.stack([slerp(a, b, t) for t in ts]).astype(np.float32)
    return np.stack([(1.0 - t) * a + t * b for t in ts]).astype(np.float32)


def latents(args, latent_dim: int, chunk: int = CHUNK) -> Iterator[np.ndarray]:
    """The generator's input, drawn like in training (`train_gan.latent_distribution`), in
    blocks of at most `chunk` rows: the same points as one draw, in constant memory."""
    from cifar_dcgan.models import latent_points

    rng = np.random.default_rng(args.seed)
    if args.interpolate:
        a, b = latent_points(rng, 2, latent_dim, args.distribution)
        yield interpolate(a, b, args.steps, args.interpolate)
        return
    for start in range(0, args.n, chunk):
        n = min(chunk, args.n - start)
        if args.constant is not None:
            yield np.full((n, latent_dim), args.constant, dtype=np.float32)
        else:
            yield latent_points(rng, n, latent_dim, args.distribution)


def main(argv: list[str] | None = None) -> None:
    run_stage(functools.partial(generate, argv))


def generate(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="cifar-dcgan-generate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="models/generator.keras", help=".keras file or models:/ URI")
    parser.add_argument("--n", type=int, default=49, help="number of images")
    parser.add_argument("--seed", type=int, default=0, help="seed of the latent points")
    parser.add_argument("--constant", type=float, help="use this value for every latent coordinate")
    parser.add_argument(
        "--distribution",
        choices=["gaussian", "uniform"],
        default="gaussian",
        help="latent distribution the generator was trained with (train_gan.latent_distribution)",
    )
    parser.add_argument(
        "--interpolate", choices=["linear", "slerp"], help="a strip between two random points"
    )
    parser.add_argument("--steps", type=int, default=10, help="images in the interpolation strip")
    parser.add_argument("--grid", type=Path, help="write the images as one PNG grid here")
    parser.add_argument("--out-dir", type=Path, help="write each image as its own PNG here")
    parser.add_argument(
        "--allow-unsafe", action="store_true", help="load models with Lambda layers (runs code)"
    )
    args = parser.parse_args(argv)
    check_arguments(parser, args)
    with start_up_notices_dropped():
        import keras  # noqa: F401  TensorFlow loads here
    generator = open_generator(args.model, args.allow_unsafe)
    written, shown = 0, []
    for points in latents(args, int(generator.input_shape[-1]), CHUNK):
        images = generator.predict(points, verbose=0)  # (chunk, H, W, C)
        if args.grid:
            shown.append(images)
        if args.out_dir:
            write_images(images, args.out_dir, first=written)
        written += len(images)
    if args.grid:
        shown = np.concatenate(shown)
        save_grid(
            shown,
            args.grid,
            columns=len(shown) if args.interpolate else max(7, isqrt(len(shown) - 1) + 1),
        )
    print(f"generated {written} image(s) from {args.model}")


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse, with a usage error (exit code 2), what would fail or mislead once the model is
    loaded: every message names the argument."""
    if args.n < 1:
        parser.error(f"argument --n: must be at least 1 (got {args.n})")
    if not 2 <= args.steps <= MAX_GRID:
        parser.error(f"argument --steps: must be 2 to {MAX_GRID} (got {args.steps})")
    if args.seed < 0:
        parser.error(f"argument --seed: must be 0 or more (got {args.seed})")
    if args.constant is not None and not math.isfinite(args.constant):
        parser.error(
            f"argument --constant: must be a finite number (got {args.constant}; it gives a blank image)"
        )
    if args.grid is None and args.out_dir is None:
        parser.error("nothing to write: give --grid FILE.png and/or --out-dir DIR")
    if args.grid and not args.interpolate and args.n > MAX_GRID:
        parser.error(
            f"argument --n: a grid shows at most {MAX_GRID} images (got {args.n}); "
            "write more with --out-dir alone"
        )
    if args.grid:
        if args.grid.is_dir():
            parser.error(f"argument --grid: {args.grid} is a folder; give a file name ending in .png")
        if args.grid.suffix.lower() != ".png":
            parser.error(
                f"argument --grid: {args.grid} must end in .png (the grid is written as a PNG image)"
            )
        _check_folder(parser, "--grid", args.grid, args.grid.parent)
    if args.out_dir:
        _check_folder(parser, "--out-dir", args.out_dir, args.out_dir)


def _check_folder(parser: argparse.ArgumentParser, flag: str, value: Path, folder: Path) -> None:
    """`folder` (where `value` goes) is a folder or can be made one: neither it nor its nearest
    existing parent is a file."""
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        why = "is a file" if existing == value else f"cannot be written: {existing} is a file"
        parser.error(f"argument {flag}: {value} {why}, not a folder")


def write_images(images: np.ndarray, folder: Path, first: int) -> None:
    """One PNG per image, numbered from `first`."""
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(to_unit(images)):
        plt.imsave(folder / f"image_{first + i:04d}.png", image)


if __name__ == "__main__":
    main()
