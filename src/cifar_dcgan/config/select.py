"""The `select_generator` section: which snapshot becomes the generator, and its registration."""

import dataclasses
from typing import ClassVar, Literal

from cifar_dcgan.config import MAX_EPOCHS, TEST_IMAGES, check
from cifar_dcgan.errors import PipelineError, quoted


@dataclasses.dataclass(frozen=True)
class SelectParams:
    SECTION: ClassVar[str] = "select_generator"

    epoch: int | None  # a manual pick; null lets the criterion choose
    criterion: Literal["fcd", "kid", "last", "acc_real"]  # the rule when no epoch is given
    target_acc_real: float  # for criterion acc_real: the D accuracy on real images aimed at
    fid_samples: int  # true FID (InceptionV3) of the chosen generator on this many images; 0: skip
    model_name: str  # MLflow registered model the chosen generator becomes a version of
    alias: str  # registry alias of the best (or hand-picked) version
    promote: Literal["if_better", "always", "never"]  # when the alias moves (cifar_dcgan.registry)

    def __post_init__(self):
        check(
            self.epoch is None or 1 <= self.epoch <= MAX_EPOCHS,
            "select_generator.epoch",
            self.epoch,
            f"null or a snapshot epoch 1 <= x <= {MAX_EPOCHS:,}",
        )
        check(
            0 <= self.target_acc_real <= 1,
            "select_generator.target_acc_real",
            self.target_acc_real,
            "0 <= x <= 1",
        )
        check(
            self.fid_samples == 0 or 2 <= self.fid_samples <= TEST_IMAGES,
            "select_generator.fid_samples",
            self.fid_samples,
            f"0 (skip) or 2 to {TEST_IMAGES} (the test images it is compared with)",
        )
        check_registry_names(self.model_name, self.alias)


def check_registry_names(model_name: str, alias: str) -> None:
    """MLflow's own rules for a registered model name and an alias, checked when params load,
    so that a bad one is refused before anything is computed or written."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import (
        _validate_model_alias_name,
        _validate_model_alias_name_reserved,
        _validate_model_name,
    )

    for key, value, checks in (
        ("select_generator.model_name", model_name, (_validate_model_name,)),
        ("select_generator.alias", alias, (_validate_model_alias_name, _validate_model_alias_name_reserved)),
    ):
        try:
            for check in checks:
                check(value)
        except MlflowException as error:
            raise PipelineError(
                f"params.yaml: {key} = {quoted(value)} is not allowed by MLflow: {error.message[:300]}"
            ) from None
