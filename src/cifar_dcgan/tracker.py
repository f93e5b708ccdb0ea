"""What training code may tell the tracking store: the `Tracker` interface, and `NullTracker`
for tracking switched off. Stages hand a `cifar_dcgan.tracking.MlflowTracker` to the library;
the library imports only this, so tracking can be switched off without changing a single
number the training computes.
"""

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np


class Tracker(Protocol):
    """What the library may tell the tracking store; implementations never change results."""

    run_id: str | None

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...

    def log_history(self, key: str, values: Sequence[float], first_step: int) -> None: ...

    def log_image(self, image: np.ndarray, key: str, step: int) -> None: ...

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...

    def set_tags(self, tags: Mapping[str, str]) -> None: ...

    def log_dataset(self, dataset: Mapping[str, Any], context: str) -> None: ...

    def flush(self, final: bool = True) -> None: ...


class NullTracker:
    """Tracking switched off."""

    run_id = None

    def log_metrics(self, metrics, step):
        pass

    def log_history(self, key, values, first_step):
        pass

    def log_image(self, image, key, step):
        pass

    def log_artifact(self, path, artifact_path=None):
        pass

    def set_tags(self, tags):
        pass

    def log_dataset(self, dataset, context):
        pass

    def flush(self, final=True):
        pass
