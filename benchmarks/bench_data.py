"""Other images: `prepare` on a real folder of 60,000 JPEGs, the memory training holds for
the images, and the training step of each recipe.

    make bench-data        (python benchmarks/bench_data.py)

- prepare: the CIFAR-10 JPEG export in ../shared/data (train/ and test/ with 10 class
  folders, 32x32 JPEGs) prepared as a folder at 64x64x3: seconds, images per second, peak
  resident memory of the stage's process, output size;
- held images: peak resident memory of a process that memory-maps N prepared images at
  128x128x3 and builds the tensor training gathers from (uint8, `gan.held_images`) against
  one that holds them as float32;
- ms per iteration of each recipe's networks and batch at its image size, float32.
Prints a Markdown table; nothing is asserted.
"""

import cifar_dcgan  # noqa: F401  first: it turns TensorFlow's oneDNN kernels on before TensorFlow loads

# isort: split
import argparse
import os
import statistics
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import yaml
from bench_pipeline import peak_run
from bench_step import cpu_name, interleaved, project_step

from cifar_dcgan.config import load_params
from cifar_dcgan.config.sections import SECTIONS

REPO = Path(__file__).resolve().parents[1]
JPEGS = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
RECIPES = {"cifar10.yaml": (32, 32, 3), "mnist.yaml": (28, 28, 1), "cat_faces.yaml": (128, 128, 3)}
HOLD = """
import sys, numpy as np, tensorflow as tf
from cifar_dcgan.gan import held_images
images = np.load(sys.argv[1], mmap_mode="r")
held = tf.constant(held_images(images) if sys.argv[2] == "uint8" else np.asarray(images))
print("held", held.dtype.name, held.shape)
"""


def prepare_folder(workdir: Path) -> dict[str, float] | None:
    if not JPEGS.exists():
        return None
    with tarfile.open(JPEGS) as tar:
        tar.extractall(workdir / "images", filter="data")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["prepare"].update(dataset="folder", md5=None, path="images", resolution=64, channels=3)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}"}
    command = [str(REPO / "stages" / "prepare.py"), "--out", "data", "--reports", "rep"]
    seconds, peak_mb = peak_run(command, workdir, env)
    output_mb = sum(p.stat().st_size for p in (workdir / "data").iterdir()) / 2**20
    count = len(np.load(workdir / "data" / "train_images.npy", mmap_mode="r")) + len(
        np.load(workdir / "data" / "test_images.npy", mmap_mode="r")
    )
    return {"seconds": seconds, "images": count, "peak_mb": peak_mb, "output_mb": output_mb}


def held_memory(workdir: Path, n: int) -> dict[str, float]:
    """Peak MB of holding `n` prepared 128x128x3 images for training, uint8 vs float32."""
    pixels = np.random.default_rng(0).integers(0, 256, (n, 128, 128, 3), dtype=np.uint8)
    path = workdir / "held.npy"
    np.save(path, (pixels.astype(np.float32) - 127.5) / 127.5)
    del pixels
    script = workdir / "hold.py"
    script.write_text(HOLD)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return {kind: peak_run([str(script), str(path), kind], workdir, env)[1] for kind in ("uint8", "float32")}


def recipe_steps(iterations: int, rounds: int) -> dict[str, float]:
    """Median ms per iteration of each recipe at its own size and batch, float32."""
    steps = {}
    for recipe, shape in RECIPES.items():
        params = load_params(REPO / "recipes" / recipe, *SECTIONS.values())
        train = params["train_gan"]
        pixels = np.random.default_rng(0).integers(0, 256, (4 * train.batch_size, *shape), dtype=np.uint8)
        images = (pixels.astype(np.float32) - 127.5) / 127.5
        iteration, _, _, _ = project_step(params["model"], train, images, "float32")
        times = interleaved({recipe: iteration}, rounds, iterations)[recipe]
        steps[f"{recipe} ({'x'.join(map(str, shape))}, batch {train.batch_size})"] = (
            statistics.median(times) * 1000
        )
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--held-images", type=int, default=10_000)
    args = parser.parse_args()
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores\n")
    print("| measure | value |\n|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        prepared = prepare_folder(Path(folder))
    if prepared:
        rate = prepared["images"] / prepared["seconds"]
        print(
            f"| prepare a folder of {prepared['images']:,} JPEGs at 64x64x3 | {prepared['seconds']:.1f} s "
            f"({rate:,.0f} images/s), peak RSS {prepared['peak_mb']:,.0f} MB, "
            f"output {prepared['output_mb']:,.0f} MB |"
        )
    else:
        print(f"| prepare a folder | skipped: {JPEGS} is absent |")
    with tempfile.TemporaryDirectory() as folder:
        held = held_memory(Path(folder), args.held_images)
    float_mb = args.held_images * 128 * 128 * 3 * 4 / 2**20
    print(
        f"| hold {args.held_images:,} images of 128x128x3 for training ({float_mb:,.0f} MB as float32) "
        f"| peak RSS {held['uint8']:,.0f} MB held as uint8, {held['float32']:,.0f} MB as float32 |"
    )
    for name, ms in recipe_steps(args.iterations, args.rounds).items():
        print(f"| one training iteration, recipe {name} | {ms:,.0f} ms |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
