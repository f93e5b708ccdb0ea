"""Run a tiny GAN training under a tf.distribute strategy, in its own process (TensorFlow's
devices and cluster must be set up before anything else runs).

    python tests/distributed_run.py OUT_DIR none|mirrored|multi_worker [LOGICAL_CPUS [CHANGES]]

CHANGES: JSON of train_gan values, and of model values under "model".

Writes OUT_DIR/reports (losses.csv, snapshots.csv, ...) when this process is the chief, and
prints one JSON line: {"chief": ..., "replicas": ...} or {"error": "..."}.
"""

import json
import sys
from pathlib import Path

import tensorflow as tf

out, distribute = Path(sys.argv[1]), sys.argv[2]
if len(sys.argv) > 3:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * int(sys.argv[3])
    )

from cifar_dcgan.errors import PipelineError  # noqa: E402
from cifar_dcgan.training import is_chief, make_strategy, train_gan  # noqa: E402

strategy = make_strategy(distribute)

import numpy as np  # noqa: E402
from test_distribute import VARIANT  # noqa: E402

from cifar_dcgan.config import parse_section  # noqa: E402
from cifar_dcgan.config.sections import SECTIONS  # noqa: E402
from cifar_dcgan.tracker import NullTracker  # noqa: E402
from conftest import SMALL_MODEL, synthetic_images, tiny_training  # noqa: E402

with open(Path(__file__).parents[1] / "params.yaml") as file:
    import yaml

    raw = yaml.safe_load(file)
changes = {
    **VARIANT["train_gan"],
    "distribute": distribute,
    **json.loads(sys.argv[4] if len(sys.argv) > 4 else "{}"),
}
model_changes = {**SMALL_MODEL, **VARIANT["model"], **changes.pop("model", {})}
model = parse_section("model", {**raw["model"], **model_changes}, SECTIONS["model"])
params = parse_section("train_gan", {**raw["train_gan"], **tiny_training(**changes)}, SECTIONS["train_gan"])
images = synthetic_images(64, seed=3).astype(np.float32) / 127.5 - 1.0
chief = is_chief(strategy)
folder = out if chief else out / f"worker_{strategy.cluster_resolver.task_id}"
try:
    train_gan(
        images, model, params, folder / "snapshots", folder / "reports", NullTracker(), strategy=strategy
    )
except PipelineError as error:
    print(json.dumps({"error": str(error)}))
    sys.exit(0)
print(json.dumps({"chief": chief, "replicas": strategy.num_replicas_in_sync}))
