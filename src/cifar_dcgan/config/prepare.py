"""The `prepare` section: where the CIFAR-10 archive comes from and how much of it to keep."""

import dataclasses
from typing import ClassVar

from cifar_dcgan.config import check

MAX_RETRIES = 20


@dataclasses.dataclass(frozen=True)
class PrepareParams:
    SECTION: ClassVar[str] = "prepare"

    url: str  # http(s)://, file:// or a local path of cifar-10-python.tar.gz
    md5: str  # expected md5 of the archive
    limit: int | None  # keep only the first N training images
    retries: int  # download attempts after a transient network error

    def __post_init__(self):
        check(
            len(self.md5) == 32 and all(c in "0123456789abcdef" for c in self.md5),
            "prepare.md5",
            self.md5,
            "32 lower-case hex digits",
        )
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
