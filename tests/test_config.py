"""params.yaml: the shipped file is valid, and bad values fail naming key, value and what is allowed."""

import copy

import pytest
import yaml

from cifar_dcgan.config import TrackingParams, flatten, load_params
from cifar_dcgan.config.model import ModelParams
from cifar_dcgan.config.prepare import PrepareParams
from cifar_dcgan.config.sanity import SanityParams
from cifar_dcgan.config.sections import SECTIONS
from cifar_dcgan.config.train_gan import TrainGanParams
from cifar_dcgan.errors import PipelineError
from conftest import REPO


def test_shipped_params_are_valid_and_classic():
    params = load_params(
        REPO / "params.yaml", TrackingParams, PrepareParams, ModelParams, TrainGanParams, SanityParams
    )
    assert params["prepare"].url == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert params["prepare"].md5 == "c58f30108f718f92721af3b95e74349a"
    gan = params["train_gan"]
    assert (gan.epochs, gan.batch_size, gan.latent_dim, gan.d_learning_rate, gan.beta1) == (
        200,
        128,
        100,
        2e-4,
        0.5,
    )
    assert params["model"].d_filters == (64, 128, 128, 256) and params["model"].d_dropout == 0.4
    assert gan.g_ema == 0.0  # later tricks are off by default
    assert (gan.loss, gan.d_steps, gan.diff_augment, params["model"].d_spectral_norm) == ("bce", 1, (), False)
    assert flatten({"model": params["model"]})["model.g_filters"] == [128, 128, 128]


def test_every_param_has_a_comment():
    for number, line in enumerate((REPO / "params.yaml").read_text().splitlines(), start=1):
        if line.startswith("  ") and ":" in line:
            assert " # " in line, f"params.yaml line {number} has no comment: {line!r}"


BAD = [
    ("train_gan", "epochs", 0, "train_gan.epochs = 0 .* an integer >= 1"),
    ("train_gan", "epochs", 2.5, "train_gan.epochs = 2.5 .* a whole number"),
    ("train_gan", "batch_size", 127, "train_gan.batch_size = 127 .* an even integer"),
    ("train_gan", "batch_size", 2, "an even integer >= 4"),
    ("train_gan", "label_smoothing", 0.5, r"label_smoothing = 0.5 .* 0 <= x < 0.5"),
    ("train_gan", "label_smoothing", "0.1", "label_smoothing = '0.1' .* a number"),
    ("train_gan", "snapshot_every", 500, r"snapshot_every = 500 .* 1 <= x <= epochs \(200\)"),
    ("train_gan", "latent_distribution", "normal", "latent_distribution = 'normal' .* gaussian | uniform"),
    ("train_gan", "sampling", "sequential", "one of random | shuffled"),
    (
        "train_gan",
        "precision",
        "bf16",
        "precision = 'bf16' .* float32 | mixed_bfloat16 | mixed_float16 | auto",
    ),
    ("train_gan", "on_failure", "ignore", "on_failure = 'ignore' .* warn | stop | restart"),
    ("train_gan", "d_learning_rate", -1, "d_learning_rate = -1.0 .* a number > 0"),
    ("train_gan", "seed", True, "train_gan.seed = True .* a whole number"),
    ("train_gan", "g_ema", 1.0, r"train_gan.g_ema = 1.0 .* 0 \(off\) or a decay 0 < x < 1"),
    ("train_gan", "epoch", 3, r"unknown key\(s\) train_gan.epoch; allowed in 'train_gan': epochs"),
    (
        "model",
        "g_upsampling",
        "pixel_shuffle",
        "g_upsampling = 'pixel_shuffle' .* conv_transpose | upsample_conv",
    ),
    ("model", "init", "he", "model.init = 'he'"),
    ("model", "d_dropout", 1.0, r"model.d_dropout = 1.0 .* 0 <= x < 1"),
    ("model", "d_batch_norm", "yes", "model.d_batch_norm = 'yes' .* true or false"),
    ("model", "g_filters", [], "model.g_filters = \\[\\] .* a non-empty list"),
    ("model", "g_filters", [128] * 6, "a list of 1 to 5 positive widths"),
    ("prepare", "md5", "abc", "prepare.md5 = 'abc' .* 32 lower-case hex digits"),
    ("prepare", "limit", 0, "prepare.limit = 0"),
    ("train_discriminator_sanity", "min_accuracy", 1.5, "min_accuracy = 1.5 .* 0 <= x <= 1"),
    # sizes nobody could run: refused when params load, with what they would cost
    (
        "train_gan",
        "eval_samples",
        10**12,
        r"eval_samples = 1000000000000 .* 1 <= x <= 50000 \(CIFAR-10 has 50,000 ",
    ),
    ("train_gan", "eval_samples", 10**12, r"1000000000000 would take ~12,288,000 GB as float32"),
    (
        "train_gan",
        "fcd_samples",
        10**9,
        r"fcd_samples = 1000000000 .* 2 <= x <= 50000 \(generated images held at once\); .* ~12,288 GB",
    ),
    ("train_gan", "batch_size", 10**9, r"batch_size = 1000000000 .* 4 <= x <= 50000"),
    ("train_gan", "latent_dim", 10**9, r"latent_dim = 1000000000 .* 1 <= x <= 16384"),
    ("train_evaluator", "batch_size", 10**9, r"train_evaluator.batch_size = 1000000000 .* 1 <= x <= 50000"),
    ("select_generator", "fid_samples", 10**9, r"fid_samples = 1000000000 .* 2 to 10000 \(the test images"),
    ("train_gan", "seed", -1, r"train_gan.seed = -1 .* 0 <= x <= 2147483647"),
    ("train_gan", "seed", 2**40, r"train_gan.seed = 1099511627776 .* 0 <= x <= 2147483647"),
    ("train_evaluator", "seed", -1, r"train_evaluator.seed = -1"),
    ("train_evaluator", "pool", "before", r"train_evaluator.pool = 'before' .* after \| between"),
    (
        "train_evaluator",
        "warmup_epochs",
        1000,
        r"train_evaluator.warmup_epochs = 1000.0 .* < train_evaluator.epochs \(\d+\)",
    ),
    ("train_evaluator", "warmup_epochs", -1, r"train_evaluator.warmup_epochs = -1.0 .* 0 <= x"),
    ("train_discriminator_sanity", "seed", 2**40, r"train_discriminator_sanity.seed = 1099511627776"),
    ("train_gan", "loss", "wasserstein", r"train_gan.loss = 'wasserstein' .* bce \| hinge \| least_squares"),
    ("train_gan", "d_steps", 0, r"train_gan.d_steps = 0 .* 1 <= x <= 10"),
    ("train_gan", "d_steps", 11, r"train_gan.d_steps = 11 .* 1 <= x <= 10"),
    ("train_gan", "diff_augment", ["flip"], r"diff_augment = \['flip'\] .* color \| translation \| cutout"),
    (
        "train_gan",
        "diff_augment",
        ["color", "color"],
        r"diff_augment = \['color', 'color'\] .* distinct items",
    ),
    ("train_gan", "diff_augment", "color", r"diff_augment = 'color' .* a list of distinct items"),
    ("model", "d_spectral_norm", 1, r"model.d_spectral_norm = 1 .* true or false"),
]


@pytest.mark.parametrize(
    "changes, message",
    [
        (
            {"label_smoothing": 0.1},
            r"train_gan.label_smoothing = 0.1 .* 0 with train_gan.loss hinge \(its targets",
        ),
        ({"label_noise": 0.05}, r"train_gan.label_noise = 0.05 .* 0 with train_gan.loss hinge"),
    ],
)
def test_hinge_refuses_targets_that_are_not_a_side(tmp_path, repo_params, changes, message):
    params = copy.deepcopy(repo_params)
    params["train_gan"] |= {"loss": "hinge", **changes}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(PipelineError, match=message):
        load_params(path, TrainGanParams)
    params["train_gan"] |= {"loss": "least_squares"}  # a least-squares target may be anything in [0, 1]
    path.write_text(yaml.safe_dump(params))
    assert load_params(path, TrainGanParams)["train_gan"].loss == "least_squares"
    params["train_gan"] |= {"loss": "hinge", "label_smoothing": 0.0, "label_noise": 0.0, "label_flip": 0.1}
    params["train_gan"]["diff_augment"] = ["cutout", "color"]
    path.write_text(yaml.safe_dump(params))
    parsed = load_params(path, TrainGanParams)["train_gan"]  # flips swap sides: allowed
    assert (parsed.label_flip, parsed.diff_augment) == (0.1, ("cutout", "color"))


@pytest.mark.parametrize("section, key, value, message", BAD)
def test_bad_params_name_key_value_and_what_is_allowed(tmp_path, repo_params, section, key, value, message):
    params = copy.deepcopy(repo_params)
    params[section][key] = value
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(PipelineError, match=message):
        load_params(path, SECTIONS[section])


def test_missing_key_and_unknown_section(tmp_path, repo_params):
    params = copy.deepcopy(repo_params)
    del params["train_gan"]["seed"]
    params["trian_gan"] = {}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(PipelineError, match=r"unknown section\(s\) \['trian_gan'\]"):
        load_params(path, TrainGanParams)
    del params["trian_gan"]
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(PipelineError, match=r"missing key\(s\) train_gan.seed"):
        load_params(path, TrainGanParams)


def test_unreadable_params_file(tmp_path):
    with pytest.raises(PipelineError, match="cannot read .*nope.yaml"):
        load_params(tmp_path / "nope.yaml", TrainGanParams)
    (tmp_path / "bad.yaml").write_text("train_gan: [unclosed")
    with pytest.raises(PipelineError, match="bad.yaml is not valid YAML"):
        load_params(tmp_path / "bad.yaml", TrainGanParams)
