"""`prepare`: download, verification, safe parsing and the written arrays."""

import dataclasses
import gzip
import hashlib
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tarfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest
import yaml

from cifar_dcgan import cifar, cifar_archive, download, prepare_writer
from cifar_dcgan.errors import PipelineError
from conftest import REPO, official_members, synthetic_images, write_archive

WRONG_MD5 = "f" * 32


def prepare_into(tmp_path, archive_path, md5, limit=None):
    return cifar.prepare(archive_path, md5, tmp_path / "out", tmp_path / "reports", limit)


def assert_nothing_written(tmp_path):
    leftovers = [p.name for p in tmp_path.iterdir() if p.name in ("out", "reports") or ".tmp" in p.name]
    assert leftovers == []


def test_prepare_scales_reorders_and_reports(tmp_path, archive):
    path, md5 = archive
    summary = prepare_into(tmp_path, path, md5)
    train = np.load(tmp_path / "out" / "train_images.npy")
    test = np.load(tmp_path / "out" / "test_images.npy")
    assert train.shape == (100, 32, 32, 3) and train.dtype == np.float32
    assert test.shape == (20, 32, 32, 3)
    # batch 3's first image lands at row 40, channel-planar bytes become (H, W, C) pixels
    expected = (synthetic_images(20, seed=2)[0].astype(np.float32) - 127.5) / 127.5
    np.testing.assert_array_equal(train[40], expected)
    assert -1.0 <= train.min() and train.max() <= 1.0
    labels = np.load(tmp_path / "out" / "train_labels.npy")
    assert labels[:12].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert summary.train_per_class == [10] * 10 and summary.test_per_class == [2] * 10
    report = json.loads((tmp_path / "reports" / "summary.json").read_text())
    assert report["source_md5"] == md5 and report["train_images"] == 100
    assert (tmp_path / "reports" / "preview.png").stat().st_size > 1000


def test_prepare_limit_keeps_first_training_images(tmp_path, archive):
    path, md5 = archive
    summary = prepare_into(tmp_path, path, md5, limit=30)
    train = np.load(tmp_path / "out" / "train_images.npy")
    assert summary.train_images == 30 and train.shape[0] == 30
    expected = (synthetic_images(20, seed=1)[9].astype(np.float32) - 127.5) / 127.5
    np.testing.assert_array_equal(train[29], expected)


def test_exact_pixel_scaling():
    assert prepare_writer.scale(np.array([0, 127, 128, 255], np.uint8)).tolist() == pytest.approx(
        [-1.0, -0.5 / 127.5, 0.5 / 127.5, 1.0]
    )


def test_pickle_that_would_run_code_is_rejected_without_running(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return os.mkdir, (str(marker),)

    members = official_members()
    members["data_batch_2"][b"data"] = Exploit()
    path = tmp_path / "evil.tar.gz"
    md5 = write_archive(path, members)
    with pytest.raises(PipelineError, match="refusing to load global 'posix.mkdir'"):
        prepare_into(tmp_path, path, md5)
    assert not marker.exists()
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda m: m.pop("data_batch_4"), r"missing member\(s\) \['data_batch_4'\]"),
        (
            lambda m: m.update({"cifar-10-batches-py/../x": {}}),
            "unexpected member 'cifar-10-batches-py/../x'",
        ),
        (lambda m: m.update({"/etc/passwd": {}}), "unexpected member '/etc/passwd'"),
        (lambda m: m.update({"extra_batch": {}}), "unexpected member"),
        (
            lambda m: m["test_batch"].update({b"data": np.zeros((20, 3072), np.float32)}),
            r"b'data' must be uint8 .* got float32",
        ),
        (
            lambda m: m["data_batch_1"].update({b"data": np.zeros((20, 1024), np.uint8)}),
            r"got uint8 \(20, 1024\)",
        ),
        (lambda m: m["data_batch_1"].update({b"labels": [11] * 20}), "b'labels' must be a list of 20 ints"),
        (lambda m: m.update({"data_batch_5": [1, 2]}), "expected a dict, got list"),
        (lambda m: m["data_batch_5"].update(batch_dict_of(10)), "holds 10 images, other batches 20"),
    ],
)
def test_wrong_layout_is_rejected_and_nothing_is_written(tmp_path, mutate, message):
    members = official_members()
    mutate(members)
    path = tmp_path / "bad.tar.gz"
    md5 = write_archive(path, members)
    with pytest.raises(PipelineError, match=message):
        prepare_into(tmp_path, path, md5)
    assert_nothing_written(tmp_path)


def batch_dict_of(n):
    from conftest import batch_dict

    return batch_dict(synthetic_images(n), [0] * n)


def test_symlink_member_is_rejected(tmp_path):
    import io
    import tarfile

    path = tmp_path / "link.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info, io.BytesIO(b""))
    md5 = download.pooch.file_hash(str(path), alg="md5")
    with pytest.raises(
        PipelineError, match="unexpected member 'cifar-10-batches-py/data_batch_1' \\(a symlink\\)"
    ):
        prepare_into(tmp_path, path, md5)


def test_oversized_member_is_rejected_before_reading(tmp_path):
    path = tmp_path / "bomb.tar.gz"
    md5 = write_archive(path, {}, raw={"data_batch_1": b"\0" * (cifar_archive.MAX_MEMBER_BYTES + 1)})
    with pytest.raises(PipelineError, match="over the .* limit"):
        prepare_into(tmp_path, path, md5)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b[: len(b) // 2], "truncated or corrupt"),
        (lambda b: b"not gzip" + b, "truncated or corrupt"),
    ],
)
def test_truncated_or_non_gzip_archive(tmp_path, archive, damage, message):
    path, _ = archive
    path.write_bytes(damage(path.read_bytes()))
    md5 = download.pooch.file_hash(str(path), alg="md5")
    with pytest.raises(PipelineError, match=message) as error:
        prepare_into(tmp_path, path, md5)
    assert str(path) in str(error.value)
    assert_nothing_written(tmp_path)


def test_local_path_and_file_url_are_verified(tmp_path, archive):
    path, md5 = archive
    assert download.fetch_archive(str(path), md5, tmp_path / "cache", 0) == path
    assert download.fetch_archive(path.as_uri(), md5, tmp_path / "cache", 0) == path
    with pytest.raises(PipelineError, match=f"md5 mismatch for {path}: expected {WRONG_MD5}, got {md5}"):
        download.fetch_archive(str(path), WRONG_MD5, tmp_path / "cache", 0)
    with pytest.raises(PipelineError, match="archive not found: .*nowhere.tar.gz"):
        download.fetch_archive(str(tmp_path / "nowhere.tar.gz"), md5, tmp_path / "cache", 0)
    with pytest.raises(PipelineError, match="unsupported scheme 'ftpx'"):
        download.fetch_archive("ftpx://host/a.tar.gz", md5, tmp_path / "cache", 0)
    assert download.fetch_archive(f"file://localhost{path}", md5, tmp_path / "cache", 0) == path


def test_a_file_url_of_another_host_is_refused_not_read_locally(tmp_path, archive):
    path, md5 = archive
    with pytest.raises(PipelineError, match="a file:// URL of another host \\(otherhost\\)"):
        download.fetch_archive(f"file://otherhost{path}", md5, tmp_path / "cache", 0)


def test_a_folder_a_pipe_or_a_device_as_the_archive_is_named_for_what_it_is(tmp_path, archive):
    _, md5 = archive
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for given, message in (
        (tmp_path, "is a folder"),
        (fifo, "is not a regular file"),
        ("/dev/zero", "device"),
    ):
        with pytest.raises(PipelineError, match=message):
            download.fetch_archive(str(given), md5, tmp_path / "cache", 0)


def test_http_download_is_verified_and_cached(tmp_path, archive, http_server):
    path, md5 = archive
    shutil.copy(path, http_server.directory / path.name)
    url = f"{http_server.url}/{path.name}"
    cache = tmp_path / "cache"
    fetched = download.fetch_archive(url, md5, cache, 0)
    assert fetched.read_bytes() == path.read_bytes()
    download.fetch_archive(url, md5, cache, 0)
    assert http_server.requests == [f"/{path.name}"]  # the second call used the cache


def test_http_md5_mismatch_leaves_no_file(tmp_path, archive, http_server):
    path, md5 = archive
    shutil.copy(path, http_server.directory / path.name)
    url = f"{http_server.url}/{path.name}"
    with pytest.raises(PipelineError, match=f"md5 mismatch for {url}.*{md5}"):
        download.fetch_archive(url, WRONG_MD5, tmp_path / "cache", 0)
    assert list((tmp_path / "cache").glob("*")) == []


def test_http_404_names_url_and_status(tmp_path, http_server):
    url = f"{http_server.url}/missing.tar.gz"
    with pytest.raises(PipelineError, match=f"download of {url} failed: HTTP 404 after 2 attempt"):
        download.fetch_archive(url, WRONG_MD5, tmp_path / "cache", 1)
    assert len(http_server.requests) == 2  # retried once


def test_unreachable_host_names_url(tmp_path):
    import socket

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/cifar-10-python.tar.gz"
    with pytest.raises(PipelineError, match=f"cannot reach {url}"):
        download.fetch_archive(url, WRONG_MD5, tmp_path / "cache", 0)


def test_unwritable_output_is_a_clear_error(tmp_path, archive):
    path, md5 = archive
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(PipelineError, match=f"cannot write to {blocker}"):
        cifar.prepare(path, md5, blocker / "out", tmp_path / "reports", None)


def test_stage_exits_non_zero_with_one_clear_line(tmp_path, archive):
    path, md5 = archive
    params = (REPO / "params.yaml").read_text().replace("c58f30108f718f92721af3b95e74349a", WRONG_MD5)
    params = params.replace("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", str(path))
    (tmp_path / "params.yaml").write_text(params)
    result = subprocess.run(
        [sys.executable, str(REPO / "stages" / "prepare.py"), "--out", "data", "--reports", "reports"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: md5 mismatch for {path}")
    assert not (tmp_path / "data").exists() and not (tmp_path / "reports").exists()


@pytest.mark.slow
def test_prepare_on_the_full_mirror(full_mirror):
    _, _, out, summary = full_mirror
    assert (summary.train_images, summary.test_images) == (50_000, 10_000)
    assert summary.train_per_class == [5_000] * 10 and summary.test_per_class == [1_000] * 10
    train = np.load(out / "train_images.npy", mmap_mode="r")
    assert train.shape == (50_000, 32, 32, 3) and train.dtype == np.float32
    assert (summary.min_value, summary.max_value) == (-1.0, 1.0)


@dataclasses.dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str
    stderr_bytes: int
    peak_mb: float  # the stage's own peak resident memory


def run_prepare_stage(folder: Path, out: str = "data", reports: str = "reports", **prepare) -> Finished:
    """Run stages/prepare.py in `folder` with the repository's params changed by `prepare`,
    tracking into `folder`/mlflow.db; its output goes to files, its peak memory is measured."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["prepare"].update(prepare)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder / 'mlflow.db'}"
    # the stage's peak as the stage's own process saw it (VmHWM at exit): a child's ru_maxrss
    # also counts the pages of the test process it was forked from, before its exec
    peak_file = folder / "peak.txt"
    script, argv = str(REPO / "stages" / "prepare.py"), ["--out", out, "--reports", reports]
    launcher = (
        "import atexit, re, runpy, sys; "
        f"atexit.register(lambda: open({str(peak_file)!r}, 'w').write("
        "re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))); "
        f"sys.argv = [{script!r}, *{argv!r}]; runpy.run_path({script!r}, run_name='__main__')"
    )
    with open(folder / "stdout.txt", "w+b") as stdout, open(folder / "stderr.txt", "w+b") as stderr:
        process = subprocess.run(
            [sys.executable, "-c", launcher], cwd=folder, env=env, stdout=stdout, stderr=stderr
        )
        stdout.seek(0), stderr.seek(0)
        return Finished(
            process.returncode,
            stdout.read(100_000).decode(errors="replace"),
            stderr.read(100_000).decode(errors="replace"),
            os.fstat(stderr.fileno()).st_size,
            int(peak_file.read_text()) / 1024,
        )


def assert_one_error_line(finished: Finished, start: str) -> str:
    """The stage failed with exit code 2 and a last stderr line starting with `start`, no traceback."""
    assert finished.returncode == 2, finished.stderr[-2000:]
    assert "Traceback" not in finished.stderr
    last = finished.stderr.strip().splitlines()[-1]
    assert last.startswith(start), last[:500]
    return last


def header(name: str, kind: bytes, size: int = 0, pax: dict | None = None) -> bytes:
    """One tar header block (with its PAX header, if given), as tarfile writes it."""
    info = tarfile.TarInfo(name)
    info.type, info.size, info.pax_headers = kind, size, pax or {}
    return info.tobuf(tarfile.PAX_FORMAT if pax else tarfile.GNU_FORMAT)


def write_raw_tar(path: Path, chunks: Iterable[bytes]) -> str:
    """Gzip hand-made tar blocks (then the end-of-archive blocks) into `path`; return its md5."""
    with gzip.open(path, "wb", compresslevel=1) as archive:
        for chunk in chunks:
            archive.write(chunk)
        archive.write(b"\0" * 2 * tarfile.BLOCKSIZE)
    return hashlib.md5(path.read_bytes()).hexdigest()


def long_name_bomb(size: int) -> Iterable[bytes]:
    """A GNU long-name header announcing a `size`-byte name, that name, and its member."""
    yield header("././@LongLink", tarfile.GNUTYPE_LONGNAME, size)
    for start in range(0, size, 2**20):
        yield b"a" * min(2**20, size - start)
    yield b"\0" * (-size % tarfile.BLOCKSIZE)
    yield header(f"{cifar_archive.ROOT}/data_batch_1", tarfile.REGTYPE)


def test_a_tar_header_bomb_is_refused_in_bounded_memory_with_a_short_error(tmp_path):
    # 150 MB of name in a few hundred KB: tarfile alone would hold it several times in memory
    path = tmp_path / "bomb.tar.gz"
    md5 = write_raw_tar(path, long_name_bomb(150 * 2**20))
    assert path.stat().st_size < 2**20
    finished = run_prepare_stage(tmp_path, url=str(path), md5=md5)
    last = assert_one_error_line(finished, f"error: {path}: refused a GNU long name of {150 * 2**20} bytes")
    assert "64 KiB" in last and len(last) < 1000
    assert finished.stderr_bytes < 5000
    assert finished.peak_mb < 500, f"peak memory {finished.peak_mb:.0f} MB"
    assert not (tmp_path / "data").exists() and not (tmp_path / "reports").exists()


@pytest.mark.parametrize(
    "blocks, message",
    [
        (  # a PAX header of 1 MB
            [header(f"{cifar_archive.ROOT}/data_batch_1", tarfile.REGTYPE, pax={"path": "p" * 2**20})],
            f"refused a PAX header of {2**20 + 14} bytes",
        ),
        (  # 200 empty long names in a row, each read by tarfile one level deeper
            [header("././@LongLink", tarfile.GNUTYPE_LONGNAME)] * 200 + [header("x", tarfile.REGTYPE)],
            "refused a GNU long name of 0 bytes",
        ),
        (  # a sparse member, whose map tarfile reads block after block
            [header(f"{cifar_archive.ROOT}/data_batch_1", tarfile.GNUTYPE_SPARSE)],
            f"refused the sparse member '{cifar_archive.ROOT}/data_batch_1'",
        ),
        (  # its folder 10,000 times: tarfile keeps every header it read
            [header(cifar_archive.ROOT, tarfile.DIRTYPE)] * 10_000,
            "more than 32 members",
        ),
    ],
    ids=["pax-header", "long-name-chain", "sparse", "many-members"],
)
def test_headers_far_beyond_the_layout_are_refused(tmp_path, blocks, message):
    path = tmp_path / "headers.tar.gz"
    md5 = write_raw_tar(path, blocks)
    with pytest.raises(PipelineError, match=message):
        prepare_into(tmp_path, path, md5)
    assert_nothing_written(tmp_path)


def test_a_member_name_is_quoted_on_one_line_and_cut(tmp_path):
    name = "evil\n\x1b[31m" + "z" * 10_000
    path = tmp_path / "named.tar.gz"
    md5 = write_raw_tar(path, [header(name, tarfile.REGTYPE, pax={"path": name})])
    with pytest.raises(PipelineError) as error:
        prepare_into(tmp_path, path, md5)
    message = str(error.value)
    assert "unexpected member 'evil\\n\\x1b[31mzzz" in message and "z…" in message
    assert "\n" not in message and "\x1b" not in message and "z" * 200 not in message


def closed_port() -> int:
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_password_in_the_url_is_neither_shown_nor_stored(tmp_path, archive, http_server):
    password = "pw-7f2a9c"  # a word of its own: MLflow's schema has a "secrets" table
    path, md5 = archive
    shutil.copy(path, http_server.directory / path.name)
    unreachable = f"http://user:{password}@127.0.0.1:{closed_port()}/cifar-10-python.tar.gz"
    failed = run_prepare_stage(tmp_path, url=unreachable, md5=md5, retries=0)
    assert_one_error_line(failed, "error: cannot reach http://***@127.0.0.1:")
    assert password not in failed.stdout + failed.stderr
    served = f"{http_server.url.replace('http://', f'http://user:{password}@')}/{path.name}"
    done = run_prepare_stage(tmp_path, url=served, md5=md5, retries=0)
    assert done.returncode == 0, done.stderr[-2000:]
    assert password not in done.stdout + done.stderr
    dataset = json.loads((tmp_path / "data" / "dataset.json").read_text())
    assert dataset["source"] == served.replace(f"user:{password}@", "***@")
    with sqlite3.connect(tmp_path / "mlflow.db") as store:
        urls = store.execute("SELECT value FROM params WHERE key = 'prepare.url'").fetchall()
        assert sorted(urls) == sorted(
            [(unreachable.replace(f"user:{password}@", "***@"),), (dataset["source"],)]
        )
        for (table,) in store.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            rows = store.execute(f"SELECT * FROM {table}").fetchall()  # params, tags, dataset inputs...
            assert password not in repr(rows), table
    for file in tmp_path.rglob("*"):  # artifacts, prepared data, reports
        if file.is_file() and file.name != "params.yaml":
            assert password.encode() not in file.read_bytes(), file


@pytest.fixture
def small_disk(tmp_path):
    """A 20 MB tmpfs mounted for the test: a disk that fills up."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(folder)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.fixture
def large_archive(tmp_path):
    """An archive whose prepared arrays take 29.5 MB: 5 x 400 training and 400 test images."""
    path = tmp_path / "src" / "cifar-10-python.tar.gz"
    return path, write_archive(path, official_members(per_batch=400))


def test_a_full_disk_is_one_line_with_the_space_needed_and_leaves_nothing(
    tmp_path, small_disk, large_archive
):
    path, md5 = large_archive
    finished = run_prepare_stage(
        tmp_path,
        out=str(small_disk / "prepared"),
        reports=str(small_disk / "reports"),
        url=str(path),
        md5=md5,
    )
    last = assert_one_error_line(finished, f"error: cannot write {small_disk / 'prepared'}: No space left")
    assert "its files need 29.5 MB there; free some space" in last
    assert os.listdir(small_disk) == []


def test_a_full_disk_without_space_reservation_still_fails_cleanly(small_disk, large_archive, monkeypatch):
    # a file system without posix_fallocate: the disk fills while the images are written
    monkeypatch.delattr(os, "posix_fallocate")
    path, md5 = large_archive
    with pytest.raises(PipelineError, match="No space left on device; its files need 29.5 MB there"):
        cifar.prepare(path, md5, small_disk / "prepared", small_disk / "reports", None)
    assert os.listdir(small_disk) == []
