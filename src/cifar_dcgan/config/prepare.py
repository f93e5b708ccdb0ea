"""The `prepare` section: which images to prepare, where they come from, and at what size."""

import dataclasses
from typing import ClassVar, Literal

from cifar_dcgan.config import check

MAX_RETRIES = 20
RESOLUTIONS = (28, 32, 64, 128)  # the sizes the networks are checked at; others in 16..256 work too
MIN_RESOLUTION, MAX_RESOLUTION = 16, 256  # a folder's images are resized to this side


@dataclasses.dataclass(frozen=True)
class PrepareParams:
    SECTION: ClassVar[str] = "prepare"

    dataset: Literal["cifar10", "mnist", "fashion_mnist", "folder"]  # what `url` or `path` holds
    url: str  # cifar10: the archive; mnist, fashion_mnist: the folder of the four IDX files
    md5: str | None  # cifar10: the archive's md5; others: null (IDX payloads are checked by built-in digests)
    path: str  # folder: the image tree (train/ and test/, class folders: both optional)
    resolution: int  # folder: side of the square images written (28 to 128 px)
    channels: int  # folder: 1 (grey) or 3 (RGB)
    test_fraction: float  # folder without test/: share of images held out, by a hash of their path
    limit: int | None  # keep only the first N training images
    retries: int  # download attempts after a transient network error

    def __post_init__(self):
        if self.dataset == "cifar10":
            check(
                self.md5 is not None
                and len(self.md5) == 32
                and all(c in "0123456789abcdef" for c in self.md5),
                "prepare.md5",
                self.md5,
                "32 lower-case hex digits (the archive's md5)",
            )
        else:
            check(
                self.md5 is None,
                "prepare.md5",
                self.md5,
                f"null for dataset {self.dataset} (the IDX files are checked by the official digests, "
                "a folder by its content)",
            )
        check(
            MIN_RESOLUTION <= self.resolution <= MAX_RESOLUTION,
            "prepare.resolution",
            self.resolution,
            f"{MIN_RESOLUTION} <= x <= {MAX_RESOLUTION} (the recipes use 28, 32, 64 or 128)",
        )
        check(self.channels in (1, 3), "prepare.channels", self.channels, "1 (grey) or 3 (RGB)")
        check(
            0.0 < self.test_fraction < 1.0,
            "prepare.test_fraction",
            self.test_fraction,
            "0 < x < 1 (e.g. 0.1: one image in ten held out for the judge)",
        )
        check(bool(self.path.strip()), "prepare.path", self.path, "a folder of images")
        check(
            self.limit is None or self.limit >= 1,
            "prepare.limit",
            self.limit,
            "null (all images) or a whole number >= 1",
        )
        check(
            0 <= self.retries <= MAX_RETRIES,
            "prepare.retries",
            self.retries,
            f"0 <= x <= {MAX_RETRIES} (each retry of a dead URL waits longer than the one before)",
        )
