"""The data, downloaded with pooch (retries, a progress bar, the md5 checked before the
file gets its final name) or read in place from a `file://` URL or a local path: the CIFAR-10
archive, or a folder of files (the MNIST family's four IDX files). What is shown of a URL
never holds its user name or password.
"""

import logging
import urllib.parse
from pathlib import Path

import pooch
import requests

from cifar_dcgan.cifar_archive import HINT
from cifar_dcgan.errors import NO_SPACE, PipelineError, clip, quoted
from cifar_dcgan.store import redact

ARCHIVE_BYTES = 170_498_071  # cifar-10-python.tar.gz


def fetch_folder(url: str, names: list[str], cache_dir: Path, retries: int, hint: str) -> Path:
    """A local folder holding `names`: `url` itself when it is a folder here, else each name
    downloaded from `url` + name into `cache_dir` (their digests are checked by the reader,
    on the decompressed content)."""
    parsed, shown = urllib.parse.urlparse(url), quoted(redact(url))
    if parsed.scheme not in ("http", "https"):
        path = _local_path(url, parsed, shown)
        if not path.is_dir():
            raise PipelineError(
                f"prepare.url = {shown} is not a folder here; give the folder holding "
                f"{', '.join(names)}, or their http(s) base URL. {hint}"
            )
        return path
    base = url if url.endswith("/") else url + "/"
    for name in names:
        _download(urllib.parse.urljoin(base, name), None, cache_dir, retries, hint, name)
    return cache_dir


def fetch_archive(url: str, md5: str, cache_dir: Path, retries: int) -> Path:
    """Return a local path to the archive whose md5 is `md5`, downloading it if needed.
    Errors show the URL without its user name or password."""
    parsed, shown = urllib.parse.urlparse(url), quoted(redact(url))
    if parsed.scheme in ("http", "https"):
        return _download(url, md5, cache_dir, retries, HINT)
    path = _local_path(url, parsed, shown)
    if path.is_dir():
        raise PipelineError(
            f"prepare.url = {shown} is a folder ({clip(path)}), not the archive; give the path of "
            "cifar-10-python.tar.gz itself"
        )
    if path.exists() and not path.is_file():
        raise PipelineError(
            f"prepare.url = {shown} is not a regular file ({clip(path)} is a device, pipe or socket); "
            "give the path of cifar-10-python.tar.gz"
        )
    if not path.is_file():
        raise PipelineError(f"archive not found: {clip(path)} (from prepare.url = {shown}); {HINT}")
    actual = pooch.file_hash(str(path), alg="md5")
    if actual != md5:
        raise PipelineError(
            f"md5 mismatch for {clip(path)}: expected {md5}, got {actual}; "
            f"the file is corrupt or another version. {HINT}"
        )
    return path


def _local_path(url: str, parsed: urllib.parse.ParseResult, shown: str) -> Path:
    """The path a `file://` URL or a plain path names."""
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            host = clip(parsed.hostname or "?")
            raise PipelineError(
                f"prepare.url = {shown}: a file:// URL of another host ({host}) cannot be read here; "
                "copy the data to this machine and give its path, or serve it over http(s)"
            )
        return Path(urllib.parse.unquote(parsed.path))
    if parsed.scheme == "" or len(parsed.scheme) == 1:  # a plain path (or a Windows drive)
        return Path(url)
    raise PipelineError(
        f"prepare.url = {shown}: unsupported scheme {quoted(parsed.scheme)}; "
        "use http(s)://, file:// or a local path"
    )


def _download(url: str, md5: str | None, cache_dir: Path, retries: int, hint: str, name: str = "") -> Path:
    """`url` into `cache_dir` (as `name`), its md5 checked when given."""
    name = name or Path(urllib.parse.urlparse(url).path).name or "cifar-10-python.tar.gz"
    fetcher = pooch.create(
        path=cache_dir,
        base_url="",
        registry={name: f"md5:{md5}" if md5 else None},
        urls={name: url},
        retry_if_failed=retries,
    )
    shown, redacting = clip(redact(url)), _RedactUrl(url)
    pooch.get_logger().addFilter(redacting)  # its "Downloading file ... from <url>" line
    try:
        return Path(fetcher.fetch(name, progressbar=True))
    except requests.exceptions.HTTPError as error:
        raise PipelineError(
            f"download of {shown} failed: HTTP {error.response.status_code} "
            f"after {retries + 1} attempt(s); {hint}"
        ) from None
    except requests.exceptions.RequestException as error:
        raise PipelineError(
            f"cannot reach {shown} ({type(error).__name__}) after {retries + 1} "
            f"attempt(s); check the network or {hint}"
        ) from None
    except ValueError as error:  # pooch's hash mismatch
        raise PipelineError(f"md5 mismatch for {shown}: {clip(error)}; {hint}") from None
    except OSError as error:
        need = (
            f" (the CIFAR-10 archive takes {ARCHIVE_BYTES / 1e6:.1f} MB)" if error.errno in NO_SPACE else ""
        )
        raise PipelineError(
            f"cannot write the download cache {clip(cache_dir)}: {error.strerror}{need}; "
            "make it writable or free some space"
        ) from None
    finally:
        pooch.get_logger().removeFilter(redacting)


class _RedactUrl(logging.Filter):
    """Shows `url` without its user name or password in the log records it passes."""

    def __init__(self, url: str):
        super().__init__()
        self.url, self.shown = url, redact(url)

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self.shown if arg == self.url else arg for arg in record.args)
        return True
