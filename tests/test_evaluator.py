"""The evaluator: its metrics are right on known cases, and FCD / the mode-collapse signals
separate real images from noise, an untrained generator and a collapsed one."""

import json

import numpy as np
import pytest

from cifar_dcgan import evaluator, fid
from cifar_dcgan.errors import PipelineError
from cifar_dcgan.models import build_generator
from cifar_dcgan.tracker import NullTracker
from conftest import SHAPE, SMALL_MODEL, TINY_EVALUATOR, synthetic_images


def random_rotation(rng, dim):
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    return q


def test_frechet_distance_matches_the_closed_form_and_scipy():
    rng = np.random.default_rng(0)
    q = random_rotation(rng, 8)
    a, b = rng.uniform(0.2, 3.0, (2, 8))
    m1, m2 = rng.standard_normal((2, 8))
    # covariances with the same eigenvectors: Tr((C1 C2)^1/2) = sum sqrt(a b)
    expected = np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = evaluator.frechet_distance(m1, q @ np.diag(a) @ q.T, m2, q @ np.diag(b) @ q.T)
    assert got == pytest.approx(expected, rel=1e-9)
    linalg = pytest.importorskip("scipy.linalg")
    x, y = rng.standard_normal((2, 200, 8)) @ rng.standard_normal((2, 8, 8))
    c1, c2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    reference = np.trace(c1 + c2 - 2 * linalg.sqrtm(c1 @ c2).real) + np.sum((m1 - m2) ** 2)
    assert evaluator.frechet_distance(m1, c1, m2, c2) == pytest.approx(reference, rel=1e-6)
    assert evaluator.frechet_distance(m1, c1, m1, c1) == pytest.approx(0.0, abs=1e-9)


def test_kernel_distance_is_unbiased_near_zero_and_grows_with_a_shift():
    rng = np.random.default_rng(1)
    same = [
        evaluator.kernel_distance(rng.standard_normal((500, 16)), rng.standard_normal((500, 16)), rng)
        for _ in range(5)
    ]
    shifted = evaluator.kernel_distance(
        rng.standard_normal((500, 16)) + 0.5, rng.standard_normal((500, 16)), rng
    )
    assert abs(np.mean(same)) < 0.02 * shifted
    assert min(same) < 0.01 * shifted  # unbiased: equal distributions are not pushed above 0
    assert shifted > 0.1


def test_class_score_and_entropy_on_known_predictions():
    balanced = np.eye(10)[np.arange(1000) % 10]  # confident, every class equally often
    one_class = np.eye(10)[np.zeros(1000, int)]
    unsure = np.full((1000, 10), 0.1)
    assert evaluator.classifier_score(balanced) == pytest.approx(10.0, rel=1e-6)
    assert evaluator.classifier_score(one_class) == pytest.approx(1.0)
    assert evaluator.classifier_score(unsure) == pytest.approx(1.0)
    assert evaluator.class_entropy(balanced) == pytest.approx(np.log2(10))
    assert evaluator.class_entropy(one_class) == 0.0


@pytest.mark.parametrize("warmup_epochs", [0, 0.5])
def test_the_learning_rate_warms_up_then_decays_to_zero(make_params, warmup_epochs):
    params = make_params("train_evaluator", epochs=4, learning_rate=0.002, warmup_epochs=warmup_epochs)
    schedule = evaluator.learning_rate(params, steps_per_epoch=100)
    rate = lambda step: float(schedule(step))  # noqa: E731
    if warmup_epochs:
        assert rate(0) == 0.0 and rate(25) == pytest.approx(0.001) and rate(50) == pytest.approx(0.002)
    else:
        assert rate(0) == pytest.approx(0.002)
    assert rate(50) > rate(200) > rate(399) > 0 and rate(400) == pytest.approx(0.0, abs=1e-9)


@pytest.fixture(scope="module")
def tiny_judge(tmp_path_factory, make_params):
    """A tiny classifier trained for one epoch on synthetic images, with its outputs."""
    params = make_params("train_evaluator", **TINY_EVALUATOR)
    scale = lambda images: images.astype(np.float32) / 127.5 - 1.0  # noqa: E731
    train = (scale(synthetic_images(512, seed=1)), np.arange(512) % 10)
    test = (scale(synthetic_images(256, seed=2)), np.arange(256) % 10)
    classifier, history = evaluator.train_classifier(train, test, params, NullTracker(), 10, verbose=0)
    folder = tmp_path_factory.mktemp("judge")
    metrics = evaluator.write_outputs(
        classifier,
        history,
        train,
        test,
        1,
        folder / "out",
        folder / "reports",
        [f"c{k}" for k in range(10)],
        dataset_digest="d" * 32,
    )
    return evaluator.Evaluator.load(folder / "out"), train, metrics, folder


def test_a_judge_refuses_other_data_and_other_shapes(tiny_judge):
    judge = tiny_judge[0]
    assert judge.dataset_digest == "d" * 32 and judge.task == "classes"
    assert judge.accuracy == tiny_judge[2]["test_accuracy"]  # named beside every verdict
    judge.check_images((32, 32, 3), "data/prepared", "d" * 32)
    with pytest.raises(PipelineError, match="other data .* run `dvc repro train-evaluator`"):
        judge.check_images((32, 32, 3), "data/prepared", "e" * 32)
    with pytest.raises(
        PipelineError, match=r"shape \(28, 28, 1\), the evaluator was trained on \(32, 32, 3\)"
    ):
        judge.check_images((28, 28, 1), "data/prepared", "d" * 32)


def separation_cases(train_images, make_params, rng, n):
    """Real images and the three kinds of bad generator, `n` images each in [-1, 1]."""
    real = train_images[rng.choice(len(train_images), n, replace=False)]
    generator = build_generator(make_params("model", **SMALL_MODEL), 100, seed=3, image_shape=SHAPE)
    untrained = generator.predict(rng.standard_normal((n, 100)).astype(np.float32), verbose=0)
    one = train_images[rng.integers(len(train_images))]
    collapsed = np.clip(one + rng.normal(0, 0.02, (n, *one.shape)), -1, 1).astype(np.float32)
    noise = rng.uniform(-1, 1, real.shape).astype(np.float32)
    return {"real": real, "noise": noise, "untrained": untrained, "collapsed": collapsed}


def test_fcd_separates_real_images_from_bad_generators_on_synthetic_data(tiny_judge, make_params):
    judge, (train_images, _), metrics, folder = tiny_judge
    cases = separation_cases(train_images, make_params, np.random.default_rng(4), 256)
    scores = {name: judge.quality(images, seed=1) for name, images in cases.items()}
    for bad in ("noise", "untrained", "collapsed"):
        assert scores[bad]["fcd"] > 10 * scores["real"]["fcd"], (bad, scores)
    assert scores["collapsed"]["diversity"] < 0.1 < 0.8 < scores["real"]["diversity"]
    # the stage's outputs: the real reference scores and a per-epoch history for DVC plots
    written = json.loads((folder / "reports" / "reference.json").read_text())
    assert {k: written[k] for k in metrics} == metrics and 0.0 <= written["test_accuracy"] <= 1.0
    assert written["task"] == "classes" and written["chance_accuracy"] == 0.1
    # a collapsed generator: its images look like one real image, they cover nothing
    assert scores["collapsed"]["recall"] < 0.05 < scores["real"]["recall"]
    assert scores["collapsed"]["coverage"] < scores["real"]["coverage"]
    shown = json.loads((folder / "reports" / "metrics.json").read_text())  # dvc exp show: one number
    assert shown == {"test_accuracy": written["test_accuracy"]}
    assert written["real_fcd"] < scores["noise"]["fcd"] / 10
    assert (folder / "reports" / "history.csv").read_text().startswith("epoch,")


def test_the_same_images_always_get_the_same_scores(tiny_judge):
    judge, (train_images, _), _, _ = tiny_judge
    images = train_images[:200]
    assert judge.quality(images, seed=5) == judge.quality(images.copy(), seed=5)


def test_a_missing_evaluator_names_the_folder_and_the_stage_to_run(tmp_path):
    with pytest.raises(PipelineError, match=f"{tmp_path}.*dvc repro train-evaluator"):
        evaluator.Evaluator.load(tmp_path)


@pytest.mark.slow
def test_fcd_and_mode_collapse_signals_on_the_real_mirror(full_mirror, make_params):
    """A small evaluator trained briefly on 10,000 real images already ranks correctly."""
    _, _, prepared, _ = full_mirror
    load = lambda name: np.load(prepared / f"{name}.npy")  # noqa: E731
    train = (load("train_images")[:10_000], load("train_labels")[:10_000])
    test = (load("test_images"), load("test_labels"))
    params = make_params("train_evaluator", filters=[16, 32, 64], features=64, epochs=2)
    classifier, _ = evaluator.train_classifier(train, test, params, NullTracker(), 10, verbose=0)
    judge = evaluator.extractor(classifier)
    features, probabilities = evaluator.embed(judge, test[0])
    assert np.mean(probabilities.argmax(axis=1) == test[1]) > 0.2  # twice chance: it has learnt something
    stats = evaluator.RealStats.of(features, np.random.default_rng(0))
    cases = separation_cases(load("train_images"), make_params, np.random.default_rng(5), 2000)
    scores = {name: evaluator.quality(judge, stats, images, seed=1) for name, images in cases.items()}
    for bad in ("noise", "untrained", "collapsed"):
        assert scores[bad]["fcd"] > 10 * scores["real"]["fcd"], (bad, scores)
        assert scores[bad]["kid"] > 10 * abs(scores["real"]["kid"]), (bad, scores)
        assert scores[bad]["class_score"] < scores["real"]["class_score"], (bad, scores)
    # a weak classifier favours some classes (real images: ~2.5 bits of 3.32) and may waver
    # between two for one noisy image (~1 bit), still well apart
    assert 2 * scores["collapsed"]["class_entropy"] < scores["real"]["class_entropy"], scores
    assert scores["collapsed"]["diversity"] < 0.1 < 0.9 < scores["real"]["diversity"], scores


@pytest.mark.slow
def test_true_fid_on_inception_features_ranks_noise_last():
    """The InceptionV3 path itself, with random weights (no download needed)."""
    rng = np.random.default_rng(6)
    real = synthetic_images(96, seed=7).astype(np.float32) / 127.5 - 1.0
    noise = rng.uniform(-1, 1, (48, 32, 32, 3)).astype(np.float32)
    same, note = fid.inception_fid(real[:48], real[48:], weights=None)
    different, _ = fid.inception_fid(noise, real[48:], weights=None)
    assert 0 <= same < different
    assert note.startswith("true FID (InceptionV3, ImageNet weights) on 48 generated vs. 48 real")


def test_true_fid_says_in_one_line_why_it_was_skipped_or_gives_a_number():
    images = synthetic_images(8, seed=8).astype(np.float32) / 127.5 - 1.0
    value, note = fid.inception_fid(images, images)
    if value is None:  # offline, and the weights are not in ~/.keras/models
        assert note.startswith("true FID skipped: the InceptionV3 ImageNet weights could not be loaded (")
        assert "\n" not in note and "~/.keras/models" in note
    else:
        assert np.isfinite(value) and note.startswith("true FID")
