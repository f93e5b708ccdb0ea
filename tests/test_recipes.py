"""The shipped recipes: each is a whole params file that loads, and builds the networks of the
recipe it names, layer for layer."""

from pathlib import Path

import pytest
import yaml

from cifar_dcgan.config import load_params
from cifar_dcgan.config.sections import SECTIONS
from cifar_dcgan.errors import PipelineError
from cifar_dcgan.models import build_discriminator, build_generator

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "recipes").glob("*.yaml"))


def layers_of(model) -> list[tuple]:
    """(kind, output shape, filters or units, kernel, strides, activation) per layer."""
    rows = []
    for layer in model.layers[1:]:
        config = layer.get_config()
        rows.append(
            (
                type(layer).__name__,
                tuple(layer.output.shape[1:]),
                config.get("filters", config.get("units")),
                config.get("kernel_size", (None,))[0],
                config.get("strides", (None,))[0],
                config.get("activation") if config.get("activation") not in (None, "linear") else None,
            )
        )
    return rows


def networks(recipe: str, shape: tuple[int, int, int]):
    params = load_params(REPO / "recipes" / recipe, *SECTIONS.values())
    model, train = params["model"], params["train_gan"]
    d = build_discriminator(model, 1, image_shape=shape)
    g = build_generator(model, train.latent_dim, 1, image_shape=shape)
    return params, layers_of(d), layers_of(g)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_each_recipe_is_a_whole_params_file(recipe):
    """Every key of params.yaml, and no other, so `cp recipes/X.yaml params.yaml` just works."""
    shipped, chosen = yaml.safe_load((REPO / "params.yaml").read_text()), yaml.safe_load(recipe.read_text())
    assert {s: sorted(v) for s, v in chosen.items()} == {s: sorted(v) for s, v in shipped.items()}
    load_params(recipe, *SECTIONS.values())


def test_the_cifar10_recipe_is_the_default_params_file():
    assert (REPO / "recipes" / "cifar10.yaml").read_text() == (REPO / "params.yaml").read_text()


def test_the_mnist_recipe_builds_the_keras_mnist_dcgan():
    params, d, g = networks("mnist.yaml", (28, 28, 1))
    lrelu = lambda shape: ("LeakyReLU", shape, None, None, None, None)  # noqa: E731
    norm = lambda shape: ("BatchNormalization", shape, None, None, None, None)  # noqa: E731
    assert d == [
        ("Conv2D", (14, 14, 64), 64, 5, 2, None),
        lrelu((14, 14, 64)),
        ("Conv2D", (7, 7, 128), 128, 5, 2, None),
        lrelu((7, 7, 128)),
        ("Flatten", (6272,), None, None, None, None),
        ("Dense", (1,), 1, None, None, "sigmoid"),
    ]
    assert g == [
        ("Dense", (6272,), 7 * 7 * 128, None, None, None),
        ("Reshape", (7, 7, 128), None, None, None, None),
        lrelu((7, 7, 128)),
        norm((7, 7, 128)),
        ("UpSampling2D", (14, 14, 128), None, None, None, None),
        ("Conv2D", (14, 14, 64), 64, 5, 1, None),
        lrelu((14, 14, 64)),
        norm((14, 14, 64)),
        ("UpSampling2D", (28, 28, 64), None, None, None, None),
        ("Conv2D", (28, 28, 1), 1, 5, 1, "tanh"),
    ]
    p, train = params["model"], params["train_gan"]
    assert p.leaky_slope == 0.2 and train.latent_dim == 100 and train.latent_distribution == "gaussian"
    assert (train.d_learning_rate, train.g_learning_rate, train.beta1) == (2e-4, 2e-4, 0.5)
    assert (train.batch_size, train.label_smoothing, train.epochs) == (256, 0.1, 50)


def test_the_cat_faces_recipe_builds_the_128_px_cat_dcgan():
    params, d, g = networks("cat_faces.yaml", (128, 128, 3))
    convs = [row for row in d if row[0] == "Conv2D"]
    assert [(r[2], r[3], r[4]) for r in convs] == [
        (64, 5, 2), (128, 5, 2), (256, 5, 2), (512, 5, 1), (1024, 5, 2)
    ]  # fmt: skip
    kinds = [row[0] for row in d]
    assert kinds == ["Conv2D", "BatchNormalization", "LeakyReLU"] * 5 + ["Flatten", "Dense"]
    assert d[-2][1] == (8 * 8 * 1024,) and d[-1][2] == 1
    assert [row[0] for row in g[:3]] == ["Dense", "LeakyReLU", "Reshape"] and g[0][2] == 8 * 8 * 1024
    ups = [row for row in g if row[0] == "Conv2DTranspose"]
    assert [(r[2], r[3], r[4], r[1][0]) for r in ups] == [
        (512, 5, 2, 16), (256, 5, 2, 32), (128, 5, 2, 64), (64, 5, 2, 128), (3, 5, 1, 128)
    ]  # fmt: skip
    assert ups[-1][5] == "tanh"
    assert [row[0] for row in g[3:-1]] == ["Conv2DTranspose", "BatchNormalization", "LeakyReLU"] * 4
    p, train = params["model"], params["train_gan"]
    assert p.init == "truncated_normal" and train.latent_distribution == "uniform"
    assert train.d_learning_rate < train.g_learning_rate and train.beta1 == 0.5
    assert train.label_smoothing > 0 and train.snapshot_every == 5


def test_the_classic_networks_grow_with_the_resolution_and_refuse_what_cannot_fit():
    params = load_params(REPO / "params.yaml", *SECTIONS.values())
    model = params["model"]
    for side in (32, 64, 128):
        g = build_generator(model, 100, 1, image_shape=(side, side, 3))
        assert g.output.shape[1:] == (side, side, 3)
        assert build_discriminator(model, 1, image_shape=(side, side, 1)).output.shape[1:] == (1,)
    with pytest.raises(PipelineError, match=r"cannot make 28x28 images.*at most 2 fit 28 px"):
        model.check_shape((28, 28, 1), 100)
    with pytest.raises(PipelineError, match=r"cannot make 33x33 images.*use an even prepare.resolution"):
        model.check_shape((33, 33, 3), None)
    with pytest.raises(
        PipelineError, match=r"train_evaluator.filters .* at most 4 entries for images of 28x28"
    ):
        params["train_evaluator"].__class__(
            **{**params["train_evaluator"].__dict__, "filters": (8,) * 5}
        ).check_image_size((28, 28, 1))
