"""An offline judge of image quality: a classifier trained on the prepared data (its classes,
or for unlabeled images the rotation task of cifar_dcgan.rotation), its features of real
test images, and the metrics that compare generated images with them.

    python stages/train_evaluator.py   (what `dvc repro train-evaluator` runs)

- `fcd`: the Frechet distance between Gaussians fitted to the classifier's penultimate
  features of generated images and of the real test split (FID's formula on this
  classifier instead of InceptionV3; the numbers are NOT comparable with published FID).
  Lower is better; a perfect generator reaches the `fcd_floor` of real training images.
- `kid`: the unbiased squared MMD with the cubic polynomial kernel on the same features,
  averaged over random subsets (KID's estimator). Unbiased, so it can go slightly below 0.
- `class_score`: exp(mean KL(p(y|x) || p(y))), the Inception Score's formula with this
  classifier: high when each image is clearly one class and all classes appear (max: the
  number of classes).
- `class_entropy`: entropy in bits of the histogram of predicted classes (log2(10) = 3.32
  when every one of 10 classes is equally common; near 0 when the generator has collapsed to
  one mode). With a rotation judge both say how upright the images look, not how varied.
- `diversity`: mean pairwise feature distance of generated images over that of real test
  images (1.0: as varied as real images; near 0: the same image over and over).
- `precision`, `recall`, `density`, `coverage` (cifar_dcgan.prdc) on the same features:
  whether generated images look real, and whether they cover the real data.
"""

import dataclasses
import hashlib
import json
import math
from pathlib import Path

import keras
import numpy as np
from keras import layers

from cifar_dcgan.config.evaluator import EvaluatorParams
from cifar_dcgan.errors import PipelineError
from cifar_dcgan.kernels import fast_kernels
from cifar_dcgan.machine import dtype_policy
from cifar_dcgan.prdc import prdc
from cifar_dcgan.rotation import ROTATIONS, RotatedBatches, all_rotations
from cifar_dcgan.tracker import Tracker

CLASSIFIER_FILE = "classifier.keras"
STATS_FILE = "real_stats.npz"
JUDGE_FILE = "judge.json"  # what the judge predicts: the data's classes, or rotations
QUALITY = (
    "fcd", "kid", "class_score", "class_entropy", "diversity", "precision", "recall", "density", "coverage"
)  # fmt: skip
ROTATION_TEST_IMAGES = 2500  # test images whose four rotations measure a rotation judge's accuracy
ROTATION_TEST_BYTES = 256 * 2**20  # at most this much of them (at 128 px: 341 images)
PRDC_MIN = 5  # density and coverage use each point's 5th nearest neighbour
NEAR_CHANCE = 0.4  # a rotation judge below this accuracy (chance: 0.25) has learned little
KID_SUBSETS, KID_SUBSET_SIZE = 50, 1000  # as in KID's reference code (Binkowski et al., 2018)
DIVERSITY_SAMPLES = 1000  # images whose pairwise feature distances are averaged


def build_classifier(
    params: EvaluatorParams, seed: int, image_shape: tuple[int, int, int], classes: int, flip: bool = True
) -> keras.Model:
    """(B, H, W, C) images in [-1, 1] -> (B, classes) class probabilities. A VGG-style net:
    per entry of `filters` two 3x3 conv + batch norm + ReLU and a 2x2 max-pool, after the
    two convs or between them (`pool`); then global average pooling, the `features` layer
    (what FCD compares), dropout and softmax. `flip` False: no random mirroring in the net
    (a rotation judge's batches are mirrored before they are turned)."""
    inputs = keras.Input(image_shape)
    x = inputs
    if params.augment:  # active in fit() only; identity when judging images
        if flip:
            x = layers.RandomFlip("horizontal", seed=seed)(x)
        # whole-pixel shifts: bilinear resampling cost a quarter of the training time
        x = layers.RandomTranslation(
            0.125, 0.125, fill_mode="reflect", interpolation="nearest", seed=seed + 1
        )(x)
    for i, filters in enumerate(params.filters):
        for j in range(2):
            x = layers.Conv2D(
                filters,
                3,
                padding="same",
                use_bias=False,
                kernel_initializer=keras.initializers.HeNormal(seed=seed + 10 * i + j),
            )(x)  # (B, side, side, filters)
            if j == 0 and params.pool == "between":
                x = layers.MaxPooling2D()(x)  # the second conv sees a quarter of the pixels
            # moving statistics over ~10 updates: with Keras' 0.99 (~100) a fifth of the initial
            # 0 / 1 is left after a quick profile's 160 updates, and the judge would use it
            x = layers.BatchNormalization(momentum=0.9)(x)
            x = layers.ReLU()(x)
        if params.pool == "after":
            x = layers.MaxPooling2D()(x)  # (B, H / 2^(i+1), W / 2^(i+1), filters)
    x = layers.GlobalAveragePooling2D()(x)  # (B, filters[-1])
    x = layers.Dense(params.features, activation="relu", name="features")(x)  # (B, features)
    x = layers.Dropout(params.dropout, seed=seed)(x)
    outputs = layers.Dense(classes, activation="softmax", dtype="float32", name="classes")(x)
    return fast_kernels(keras.Model(inputs, outputs, name="evaluator"))


def rotation_test_images(image_shape: tuple[int, ...]) -> int:
    """How many test images a rotation judge is measured on: their four rotations in float32
    stay within ROTATION_TEST_BYTES."""
    return max(1, min(ROTATION_TEST_IMAGES, ROTATION_TEST_BYTES // (4 * 4 * math.prod(image_shape))))


class EpochMetrics(keras.callbacks.Callback):
    """Sends fit()'s per-epoch logs (loss, accuracy, val_...) to the tracker."""

    def __init__(self, tracker: Tracker):
        super().__init__()
        self.tracker = tracker

    def on_epoch_end(self, epoch, logs=None):
        self.tracker.log_metrics({k: float(v) for k, v in (logs or {}).items()}, step=epoch + 1)


def learning_rate(params: EvaluatorParams, steps_per_epoch: int):
    """Rises linearly from 0 to `learning_rate` over `warmup_epochs`, then follows a cosine
    down to 0 at the last step."""
    warmup = round(params.warmup_epochs * steps_per_epoch)
    return keras.optimizers.schedules.CosineDecay(
        0.0 if warmup else params.learning_rate,
        params.epochs * steps_per_epoch - warmup,
        warmup_target=params.learning_rate if warmup else None,
        warmup_steps=warmup,
    )


def compiled_classifier(
    params: EvaluatorParams, steps_per_epoch: int, image_shape: tuple[int, int, int], classes: int, flip: bool
) -> keras.Model:
    """The classifier in `params.precision`, compiled with AdamW on `learning_rate`'s schedule."""
    with dtype_policy(params.precision):
        model = build_classifier(params, params.seed, image_shape, classes, flip)
    model.compile(
        optimizer=keras.optimizers.AdamW(
            learning_rate(params, steps_per_epoch), weight_decay=params.weight_decay
        ),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def train_classifier(
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    params: EvaluatorParams,
    tracker: Tracker,
    classes: int,
    verbose: int = 2,
) -> tuple[keras.Model, dict[str, list[float]]]:
    """Fit on (images, labels) of the training split, watching the test split each epoch
    (nothing is chosen by it). `classes` below 2 (unlabeled images): fit the rotation task
    instead, watching the test images' four rotations. Returns a float32 copy of the model
    and fit()'s history."""
    keras.utils.set_random_seed(params.seed)
    image_shape = tuple(train[0].shape[1:])
    rotation = classes < 2
    classes = ROTATIONS if rotation else classes
    model = compiled_classifier(
        params, math.ceil(len(train[0]) / params.batch_size), image_shape, classes, not rotation
    )
    if rotation:
        data = {"x": RotatedBatches(train[0], params.batch_size, params.seed, flip=params.augment)}
        validation = all_rotations(test[0][: rotation_test_images(image_shape)])
    else:
        data, validation = {"x": train[0], "y": train[1], "batch_size": params.batch_size}, test
    history = model.fit(
        **data,
        epochs=params.epochs,
        validation_data=validation,
        callbacks=[EpochMetrics(tracker)],
        verbose=verbose,
    )
    with dtype_policy("float32"):  # judge in float32, whatever precision trained it
        judge = build_classifier(params, params.seed, image_shape, classes, not rotation)
    judge.set_weights(model.get_weights())
    return judge, {k: [float(v) for v in values] for k, values in history.history.items()}


def extractor(classifier: keras.Model) -> keras.Model:
    """The classifier with two outputs: (features (B, F), class probabilities (B, classes))."""
    return keras.Model(classifier.inputs, [classifier.get_layer("features").output, classifier.output])


def embed(extractor_model: keras.Model, images: np.ndarray, batch_size: int = 500):
    """(features (n, F) float64, probabilities (n, classes) float64) of images in [-1, 1]."""
    features, probabilities = extractor_model.predict(
        np.asarray(images, np.float32), batch_size=batch_size, verbose=0
    )
    return features.astype(np.float64), probabilities.astype(np.float64)


@dataclasses.dataclass
class RealStats:
    """What generated images are compared with: the real test split's features."""

    mean: np.ndarray  # (F,)
    cov: np.ndarray  # (F, F)
    features: np.ndarray  # (n, F), for KID
    spread: float  # mean pairwise feature distance, the unit of `diversity`

    @classmethod
    def of(cls, features: np.ndarray, rng: np.random.Generator) -> "RealStats":
        return cls(
            features.mean(axis=0), np.cov(features, rowvar=False), features, _mean_distance(features, rng)
        )

    def save(self, path: Path) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as file:
            np.savez(file, **{k: np.asarray(v) for k, v in dataclasses.asdict(self).items()})
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "RealStats":
        with np.load(path, allow_pickle=False) as data:
            return cls(data["mean"], data["cov"], data["features"], float(data["spread"]))


def frechet_distance(mean1, cov1, mean2, cov2) -> float:
    """||m1 - m2||^2 + Tr(C1 + C2 - 2 (C1 C2)^(1/2)). Tr((C1 C2)^(1/2)) is the sum of the
    square roots of the eigenvalues of C1^(1/2) C2 C1^(1/2), a symmetric PSD matrix, which
    is stabler than a general matrix square root."""
    values, vectors = np.linalg.eigh(cov1)
    root1 = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    middle = root1 @ cov2 @ root1
    trace_root = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    diff = mean1 - mean2
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * trace_root)


def kernel_distance(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> float:
    """KID: unbiased MMD^2 with k(a, b) = (a.b / F + 1)^3, the mean over random subsets."""
    m = min(KID_SUBSET_SIZE, len(x), len(y))
    dim = x.shape[1]
    estimates = []
    for _ in range(KID_SUBSETS):
        a = x[rng.choice(len(x), m, replace=False)]
        b = y[rng.choice(len(y), m, replace=False)]
        kaa, kbb, kab = ((p @ q.T / dim + 1) ** 3 for p, q in ((a, a), (b, b), (a, b)))
        within = (kaa.sum() - np.trace(kaa) + kbb.sum() - np.trace(kbb)) / (m * (m - 1))
        estimates.append(within - 2 * kab.mean())
    return float(np.mean(estimates))


def classifier_score(probabilities: np.ndarray) -> float:
    """exp(E_x KL(p(y|x) || p(y))): the Inception Score's formula on this classifier."""
    p = np.clip(probabilities, 1e-12, 1)
    marginal = p.mean(axis=0, keepdims=True)
    return float(np.exp(np.mean(np.sum(p * (np.log(p) - np.log(marginal)), axis=1))))


def class_entropy(probabilities: np.ndarray) -> float:
    """Entropy in bits of the predicted-class histogram: log2(classes) balanced, 0 one class."""
    counts = np.bincount(probabilities.argmax(axis=1), minlength=probabilities.shape[1])
    share = counts[counts > 0] / counts.sum()
    return float(-(share * np.log2(share)).sum()) + 0.0  # + 0.0: one class gives 0, not -0


def _mean_distance(features: np.ndarray, rng: np.random.Generator) -> float:
    sample = features[rng.choice(len(features), min(DIVERSITY_SAMPLES, len(features)), replace=False)]
    squared = (sample**2).sum(axis=1)
    distances = np.sqrt(np.clip(squared[:, None] + squared[None, :] - 2 * sample @ sample.T, 0, None))
    n = len(sample)
    return float(distances.sum() / (n * (n - 1)))


def quality(
    extractor_model: keras.Model, stats: RealStats, images: np.ndarray, seed: int
) -> dict[str, float]:
    """Every metric of the module docstring for `images` (n, H, W, C) in [-1, 1].
    `seed` fixes KID's subsets and the diversity sample, so equal images score equally."""
    features, probabilities = embed(extractor_model, images)
    rng = np.random.default_rng(seed)
    return {
        "fcd": frechet_distance(features.mean(axis=0), np.cov(features, rowvar=False), stats.mean, stats.cov),
        "kid": kernel_distance(features, stats.features, rng),
        "class_score": classifier_score(probabilities),
        "class_entropy": class_entropy(probabilities),
        "diversity": _mean_distance(features, rng) / stats.spread,
        **_prdc(stats.features, features),
    }


def _prdc(real: np.ndarray, fake: np.ndarray) -> dict[str, float]:
    """Precision, recall, density and coverage; NaN for samples too small for their k-NN."""
    if min(len(real), len(fake)) <= PRDC_MIN:
        return dict.fromkeys(("precision", "recall", "density", "coverage"), math.nan)
    return dataclasses.asdict(prdc(real, fake))


@dataclasses.dataclass
class Evaluator:
    """The trained classifier's extractor and the real statistics, loaded once."""

    extractor: keras.Model
    stats: RealStats
    digest: str = ""  # of the real statistics: a checkpoint judged by another evaluator is not resumed
    task: str = "classes"  # classes | rotation: what the judge was trained to predict
    dataset_digest: str = ""  # of the prepared data it was trained on
    accuracy: float | None = None  # on its test images (a rotation judge: on their turns)

    @classmethod
    def load(cls, folder: Path) -> "Evaluator":
        try:
            classifier = keras.models.load_model(folder / CLASSIFIER_FILE)
            stats = RealStats.load(folder / STATS_FILE)
            digest = hashlib.sha256((folder / STATS_FILE).read_bytes()).hexdigest()
            judge = json.loads((folder / JUDGE_FILE).read_text())
            task, dataset_digest = judge["task"], str(judge.get("dataset_digest", ""))
            accuracy = float(judge["test_accuracy"]) if "test_accuracy" in judge else None
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise PipelineError(
                f"cannot load the evaluator from {folder} ({error}); run `dvc repro train-evaluator`"
            ) from None
        return cls(extractor(classifier), stats, digest, task, dataset_digest, accuracy)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.extractor.input_shape[1:])

    def check_images(self, image_shape: tuple[int, ...], what: str, dataset_digest: str = "") -> None:
        """Refuse to judge images of other data, or of another shape, than the judge was trained on."""
        if self.dataset_digest and dataset_digest and dataset_digest != self.dataset_digest:
            raise PipelineError(
                f"{what} is other data (digest {dataset_digest}) than the evaluator was trained on "
                f"({self.dataset_digest}); run `dvc repro train-evaluator` on it"
            )
        if tuple(image_shape) != self.image_shape:
            raise PipelineError(
                f"{what} holds images of shape {tuple(image_shape)}, the evaluator was trained on "
                f"{self.image_shape}; run `dvc repro train-evaluator` on the same prepared data"
            )

    def quality(self, images: np.ndarray, seed: int) -> dict[str, float]:
        return quality(self.extractor, self.stats, images, seed)


def write_outputs(
    classifier: keras.Model,
    history: dict[str, list[float]],
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    seed: int,
    out_dir: Path,
    reports_dir: Path,
    class_names: list[str],
    extra: dict[str, float] | None = None,
    dataset_digest: str = "",
) -> dict[str, float]:
    """classifier.keras, real_stats.npz (test-split features) and judge.json (its task) into
    `out_dir`; in `reports_dir` metrics.json (test accuracy: what `dvc exp show` lists),
    reference.json (also the scores of real images, the best a generator can reach, and the
    training time) and history.csv. A rotation judge's accuracy is that of the rotation task
    on the test images' four rotations. Returns the reference numbers."""
    judge = extractor(classifier)
    features, probabilities = embed(judge, test[0])
    classes = probabilities.shape[1]
    rotation = not class_names
    if rotation:
        rotated, turns = all_rotations(test[0][: rotation_test_images(test[0].shape[1:])])
        accuracy = float(np.mean(embed(judge, rotated)[1].argmax(axis=1) == turns))
    else:
        accuracy = float(np.mean(probabilities.argmax(axis=1) == test[1]))
    rng = np.random.default_rng(seed)
    stats = RealStats.of(features, rng)
    n = min(len(train[0]), len(test[0]))
    reference = quality(judge, stats, train[0][np.sort(rng.choice(len(train[0]), n, replace=False))], seed)
    task = {
        "task": "rotation" if rotation else "classes",
        "classes": [f"{90 * k} degrees" for k in range(ROTATIONS)] if rotation else list(class_names),
        "chance_accuracy": 1 / classes,
        "dataset_digest": dataset_digest,
        "test_accuracy": accuracy,  # what a comparison names as its judge's evidence
    }
    metrics = {
        "test_accuracy": accuracy,
        **{f"real_{k}": v for k, v in reference.items()},
        "real_samples": n,
        "epochs": len(history.get("loss", [])),
        **(extra or {}),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp_model = out_dir / f".tmp.{CLASSIFIER_FILE}"
    classifier.save(tmp_model)
    tmp_model.replace(out_dir / CLASSIFIER_FILE)
    stats.save(out_dir / STATS_FILE)
    (out_dir / JUDGE_FILE).write_text(json.dumps(task, indent=2) + "\n")
    reports_dir.mkdir(parents=True, exist_ok=True)
    (reports_dir / "metrics.json").write_text(json.dumps({"test_accuracy": metrics["test_accuracy"]}) + "\n")
    (reports_dir / "reference.json").write_text(json.dumps({**metrics, **task}, indent=2) + "\n")
    keys = list(history)
    lines = ["epoch," + ",".join(keys)]
    lines += [
        f"{epoch}," + ",".join(f"{history[k][epoch - 1]:.6f}" for k in keys)
        for epoch in range(1, len(history.get("loss", [])) + 1)
    ]
    (reports_dir / "history.csv").write_text("\n".join(lines) + "\n")
    return metrics
