"""The discriminator sanity gate passes a working setup and stops a broken one."""

import numpy as np
import pytest

from cifar_dcgan.errors import PipelineError
from cifar_dcgan.sanity import check_gate, train_sanity, write_reports
from cifar_dcgan.tracker import NullTracker
from conftest import synthetic_images


def test_discriminator_learns_real_images_from_noise(tmp_path, make_params):
    images = (synthetic_images(256).astype(np.float32) - 127.5) / 127.5
    result = train_sanity(
        images, make_params("model"), make_params("train_discriminator_sanity"), NullTracker()
    )
    assert len(result.acc_real) == 20
    assert result.acc_real[0] < 0.9 or result.acc_fake[0] < 0.9  # before any update it could not tell
    assert min(result.final.values()) >= 0.9
    check_gate(result, 0.9)
    write_reports(result, tmp_path)
    assert (tmp_path / "history.csv").read_text().splitlines()[0] == "iteration,acc_real,acc_fake"
    assert len((tmp_path / "history.csv").read_text().splitlines()) == 21


def test_gate_stops_when_real_images_look_like_noise(make_params):
    # "real" data that is itself uniform noise: a broken prepare step. D cannot separate it.
    noise = np.random.default_rng(0).uniform(-1, 1, (256, 32, 32, 3)).astype(np.float32)
    params = make_params("train_discriminator_sanity", iterations=5)
    result = train_sanity(noise, make_params("model"), params, NullTracker())
    with pytest.raises(
        PipelineError, match=r"sanity check failed: .* below train_discriminator_sanity.min_accuracy"
    ):
        check_gate(result, 0.9)
