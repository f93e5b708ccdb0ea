"""params.yaml: the shipped file is valid, and bad values fail naming key, value and what is allowed."""

import copy
import os
import subprocess
import sys

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
    ("prepare", "retries", 10**18, r"prepare.retries = 1000000000000000000 .* 0 <= x <= 20"),
    ("train_gan", "epochs", 0, r"train_gan.epochs = 0 .* 1 <= x <= 100,000"),
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
    ("train_gan", "d_learning_rate", -1, r"d_learning_rate = -1.0 .* a number > 0"),
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
    ("model", "g_filters", [128] * 9, "a list of 1 to 8 positive widths"),
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
    # sizes the model, the memory or the time cannot take, and numbers that are not finite
    ("model", "d_kernel", 100_000, r"model.d_kernel = 100000 .* 1 <= x <= 32"),
    ("model", "g_kernel", 33, r"model.g_kernel = 33 .* 1 <= x <= 32"),
    ("model", "d_filters", [8, 2**31], r"d_filters = \[8, 2147483648\] .* widths <= 4096 \(a 3x3 conv"),
    ("model", "d_filters", [8] * 9, r"model.d_filters = .* a list of 2 to 8 positive widths"),
    ("model", "d_strides", [2, 3, 2, 2], r"model.d_strides = \[2, 3, 2, 2\] .* one stride of 1 or 2 per"),
    ("model", "d_strides", [2, 2], r"model.d_strides .* per d_filters entry \(4\)"),
    ("model", "g_output", "pixel_shuffle", r"model.g_output .* conv \| conv_transpose \| upsample_conv"),
    ("model", "init", "he", r"model.init .* truncated_normal"),
    ("model", "g_filters", [128, 8192], r"model.g_filters = \[128, 8192\] .* widths <= 4096"),
    ("model", "g_seed_filters", 10**9, r"model.g_seed_filters = 1000000000 .* 1 <= x <= 4096"),
    ("model", "d_filters", [4096] * 3, r"the discriminator would hold ~302M weights; at most 250M fit"),
    ("model", "leaky_slope", float("nan"), r"model.leaky_slope = nan .* a finite number"),
    ("train_evaluator", "features", 10**9, r"features = 1000000000 .* 2 <= x <= 2048 \(as wide as FID's"),
    ("train_evaluator", "filters", [32, 2**31], r"train_evaluator.filters = .* widths of 1 to 4096"),
    ("train_evaluator", "epochs", 10**18, r"train_evaluator.epochs = 1000000000000000000 .* <= 100,000"),
    ("train_evaluator", "learning_rate", float("inf"), r"train_evaluator.learning_rate = inf .* finite"),
    ("train_evaluator", "warmup_epochs", float("nan"), r"train_evaluator.warmup_epochs = nan .* finite"),
    (
        "train_gan",
        "epochs",
        10**18,
        r"train_gan.epochs = 1000000000000000000 .* 1 <= x <= 100,000 \(an epoch",
    ),
    ("train_gan", "d_learning_rate", float("inf"), r"train_gan.d_learning_rate = inf .* a finite number"),
    pytest.param(
        "train_gan",
        "g_learning_rate",
        10**400,
        r"g_learning_rate = 1000000000.*… \(401 characters\) .* finite",
        id="train_gan-g_learning_rate-10**400",
    ),
    ("train_gan", "failure_loss", float("inf"), r"train_gan.failure_loss = inf .* a finite number"),
    ("train_gan", "failure_loss", float("nan"), r"train_gan.failure_loss = nan .* a finite number"),
    ("train_gan", "max_restarts", 10**6, r"max_restarts = 1000000 .* <= 271,181 \(restart n seeds with seed"),
    pytest.param(
        "train_gan",
        "eval_samples",
        10**400,
        r"eval_samples = 1000.* would take more memory than any machine has",
        id="train_gan-eval_samples-10**400",
    ),
    ("train_discriminator_sanity", "learning_rate", float("inf"), r"sanity.learning_rate = inf .* finite"),
    (
        "train_discriminator_sanity",
        "iterations",
        10**18,
        r"sanity.iterations = 1000000000000000000 .* <= 100,000",
    ),
    ("select_generator", "epoch", 10**18, r"select_generator.epoch = 1000000000000000000 .* <= 100,000"),
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


def test_generator_too_large_for_its_latent_dim_is_refused(tmp_path, repo_params):
    """Each is allowed alone; together, at 32 px, the generator's first layer holds
    16384 x 4 x 4 x 4096 weights: refused once the data's shape is known, before training."""
    params = copy.deepcopy(repo_params)
    params["model"]["g_seed_filters"], params["train_gan"]["latent_dim"] = 4096, 16384
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    loaded = load_params(path, ModelParams, TrainGanParams)
    assert loaded["model"].g_seed_filters == 4096
    with pytest.raises(
        PipelineError, match=r"the generator would hold ~1,083M weights; at most 250M .* train_gan.latent_dim"
    ):
        loaded["model"].check_shape((32, 32, 3), loaded["train_gan"].latent_dim)


def test_a_long_value_is_quoted_cut_short(tmp_path, repo_params):
    params = copy.deepcopy(repo_params)
    params["select_generator"]["criterion"] = "y" * 100_000
    params["select_generator"]["model_name"] = "a/" * 3000
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, width=10**6))
    for section, key in (("select_generator", "criterion"), ("select_generator", "model_name")):
        with pytest.raises(PipelineError, match=rf"{section}.{key} = '.*… \(\d[\d,]+ characters\)") as error:
            load_params(path, SECTIONS[section])
        assert len(str(error.value)) < 700
        params[section][key] = repo_params[section][key]
        path.write_text(yaml.safe_dump(params))


def alias_bomb(levels: int) -> str:
    """Each level a list of nine copies of the one below: a few KB of YAML, 9**levels strings."""
    value = "&a0 [x, x, x, x, x, x, x, x, x]"
    for i in range(1, levels):
        value = f"&a{i} [{value}, " + ", ".join([f"*a{i - 1}"] * 8) + "]"
    return value


def test_alias_bomb_is_refused_in_one_short_line(tmp_path):
    """As found: `cifar-dcgan-compare` on such a params file printed the expanded value (351 MB
    at eight levels); six levels here, so that the old behaviour stays cheap to see."""
    text = (
        (REPO / "params.yaml")
        .read_text()
        .replace("experiment: cifar10-dcgan", f"experiment: {alias_bomb(6)}")
    )
    path = tmp_path / "params.yaml"
    path.write_text(text)
    assert len(text) < 10_000
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cifar_dcgan.compare",
            "--params",
            str(path),
            "--no-track",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.count("\n") == 1 and len(result.stderr) < 300, result.stderr[:2000]
    assert "line 2: YAML anchors and aliases" in result.stderr and "write the values out" in result.stderr
    assert str(path) in result.stderr


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda t: t + "\ntracking:\n  experiment: other\n",
            r"line 9\d: duplicate key tracking \(first on line 1\)",
        ),
        (
            lambda t: t.replace("  epochs: 200", "  epochs: 3\n  epochs: 200"),
            r"line \d+: duplicate key train_gan.epochs \(first on line \d+\); DVC refuses such a file too",
        ),
        (
            lambda t: t.replace("  epochs: 200", '  "epochs": 3\n  epochs: 200'),
            r"duplicate key train_gan.epochs",
        ),
        (
            lambda t: t.replace("experiment: cifar10-dcgan", "experiment: {a: 1, a: 2}"),
            r"line 2: duplicate key tracking.experiment.a",
        ),
        (
            lambda t: t.replace("  seed: 1  # weights, sampling, latent", "  <<: &x {seed: 1}\n  s: *x"),
            "anchors",
        ),
        (
            lambda t: t.replace("experiment: cifar10-dcgan", "experiment: " + "[" * 20_000),
            "nested deeper than 8",
        ),
        (lambda t: t + "#" * 1_000_000, r"is larger than 1,000,000 bytes; a params file needs a few KB"),
        (
            lambda t: t.replace("epochs: 200", "epochs: 1" + "0" * 5000),
            r"a value cannot be read: Exceeds the limit",
        ),
        (lambda t: t + "\n1: x\nfoo: y\n", r"unknown section\(s\) \[1, 'foo'\]"),
    ],
    ids=[
        "section",
        "key",
        "quoted key",
        "flow mapping",
        "merge",
        "nesting",
        "size",
        "huge integer",
        "mixed keys",
    ],
)
def test_params_file_that_is_not_one_is_refused(tmp_path, edit, message):
    """Duplicate keys: DVC refuses the file, so the stages must not quietly take the last value."""
    path = tmp_path / "params.yaml"
    path.write_text(edit((REPO / "params.yaml").read_text()))
    with pytest.raises(PipelineError, match=message) as error:
        load_params(path, TrackingParams, TrainGanParams)
    assert str(path) in str(error.value) and len(str(error.value)) < 400
