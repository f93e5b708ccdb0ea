"""The DCGAN training step, written once: every variant is a parameter of it.

Per iteration, exactly the classic algorithm:
1. update D on a half-batch of real images (target 1, or smoothed / noisy / flipped),
2. update D on a half-batch of generated images (target 0, or flipped),
3. update G on a full batch of latent points with target 1 through D, leaving D unchanged.
The loop is Keras `fit()`; snapshots and tracking are callbacks (see training.py).
Later stabilizers are parameters of the same step, off by default: `train_gan.loss` (the
losses of steps 1-3, cifar_dcgan.losses), `d_steps` (steps 1-2 repeated on fresh
half-batches before 3), `diff_augment` (what D sees in 1-3, cifar_dcgan.augment), `g_ema`
(an average of G's weights for snapshots) and `model.d_spectral_norm`.

The step also runs under a `tf.distribute` strategy (see training.py): each replica gets
its share of every half-batch, losses are scaled so that the summed gradients equal those
of the global batch, and random draws (latent points, label noise and flips) are made for
the global batch from a seed and the iteration number, each replica keeping its slice. On
one device or many, the same global batch sees the same numbers.
"""

import keras
import numpy as np
import tensorflow as tf

from cifar_dcgan.augment import augment
from cifar_dcgan.config.train_gan import TrainGanParams
from cifar_dcgan.kernels import fast_kernels
from cifar_dcgan.losses import LOSSES, Loss
from cifar_dcgan.prepared import chunks, scale
from cifar_dcgan.replicas import global_mean, replica_share, replicas

DRAWS_PER_ITERATION = 8  # stateless random draws of one D (and G) step, each with its own seed


def discriminator_update(
    discriminator: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    images: tf.Tensor,
    targets: tf.Tensor,
    loss_fn: Loss,
) -> tuple[tf.Tensor, tf.Tensor]:
    """One gradient step of D towards `targets` under `loss_fn`; returns (the global batch's
    loss, D's outputs before the step)."""
    with tf.GradientTape() as tape:
        predictions = discriminator(images, training=True)  # (B, 1)
        loss = loss_fn(targets, predictions)
        scaled_loss = scaled(optimizer, loss / replicas())  # replicas' gradients are summed
    gradients = tape.gradient(scaled_loss, discriminator.trainable_weights)
    optimizer.apply_gradients(zip(gradients, discriminator.trainable_weights))
    return global_mean(loss), predictions


def scaled(optimizer: keras.optimizers.Optimizer, loss: tf.Tensor) -> tf.Tensor:
    """The loss to differentiate: scaled up under float16 loss scaling (the optimizer unscales)."""
    return optimizer.scale_loss(loss) if hasattr(optimizer, "scale_loss") else loss


def accuracy(predictions: tf.Tensor, real: bool, threshold: float = 0.5) -> tf.Tensor:
    """Share of D's outputs on the right side of `threshold` (see cifar_dcgan.losses)."""
    hits = predictions > threshold if real else predictions < threshold
    return global_mean(tf.reduce_mean(tf.cast(hits, tf.float32)))


class StepDraws:
    """The step's random numbers (latent points, label flips and noise, augmentation seeds),
    drawn for the global batch from the seed state and the iteration only, each replica keeping
    its slice: draws do not depend on how many replicas share the batch, and a resumed run
    draws what the uninterrupted one would have."""

    def __init__(self, params: TrainGanParams, latent_dim: int, seed_generator, iteration: tf.Variable):
        self.params, self.latent_dim = params, latent_dim
        self.seed_generator, self.iteration = seed_generator, iteration

    def seed(self, draw: int, d_step: int = 0) -> tf.Tensor:
        """The seed of draw number `draw` of D step `d_step` of this iteration (G's draws share
        the last D step's numbers, using draws D's do not)."""
        base = tf.cast(self.seed_generator.state[0], tf.int64)
        step = self.iteration * self.params.d_steps + d_step
        return tf.stack([base, step * DRAWS_PER_ITERATION + draw])

    def uniform(self, draw: int, rows, columns, low=0.0, high=1.0, d_step: int = 0) -> tf.Tensor:
        """This replica's share of a (rows, columns) uniform draw for the global batch."""
        seed = self.seed(draw, d_step)
        return replica_share(tf.random.stateless_uniform((rows, columns), seed, low, high))

    def random_latent_vectors(self, draw: int, rows, d_step: int = 0) -> tf.Tensor:
        """This replica's share of `rows` latent points for the global batch."""
        if self.params.latent_distribution == "uniform":
            return self.uniform(draw, rows, self.latent_dim, -1.0, 1.0, d_step)
        return replica_share(tf.random.stateless_normal((rows, self.latent_dim), self.seed(draw, d_step)))

    def discriminator_targets(self, draw: int, labels: tf.Tensor, global_rows, d_step: int = 0) -> tf.Tensor:
        """Hard labels (1 real, 0 fake) -> D's targets: flipped, then one-sided smoothing and
        noise on whatever is labelled real. Uses draws `draw` and `draw + 1`."""
        p = self.params
        flip = self.uniform(draw, global_rows, 1, d_step=d_step) < p.label_flip
        labels = tf.where(flip, 1.0 - labels, labels)
        noise = self.uniform(draw + 1, global_rows, 1, -p.label_noise, p.label_noise, d_step)
        return tf.clip_by_value(labels * (1.0 - p.label_smoothing + noise), 0.0, 1.0)


class GeneratorAverage:
    """train_gan.g_ema: an exponential moving average of G's trainable weights, updated after
    each G update, and a copy of G (built with it, under the same strategy scope) that shows it."""

    def __init__(self, generator: keras.Model, decay: float):
        self.generator, self.decay = generator, decay
        first = tf.VariableAggregation.ONLY_FIRST_REPLICA  # every replica holds the same values
        self.weights = [
            tf.Variable(w.value, trainable=False, aggregation=first, name=f"ema_{i}")
            for i, w in enumerate(generator.trainable_weights)
        ]
        self.shown = fast_kernels(keras.models.clone_model(generator))

    def update(self, iteration: tf.Variable) -> None:
        """The average at the named decay from the first update on, without its bias towards
        where it started (as Adam corrects its moments): after t updates it weighs G's weights of
        update s by decay^(t-s), normalized over the updates so far. The first update copies G;
        the weights of a run long against 1 / (1 - decay) updates are the plain EMA's."""
        t = tf.cast(iteration, tf.float64) + 1.0
        decay = tf.constant(self.decay, tf.float64)
        rate = tf.cast((1.0 - decay) / (1.0 - tf.pow(decay, t)), tf.float32)  # 1 at the first update
        for average, weight in zip(self.weights, self.generator.trainable_weights):
            average.assign_add(rate * (tf.cast(weight, average.dtype) - average))

    def snapshot(self) -> keras.Model:
        """The copy of G holding the average (and G's batch-norm statistics)."""
        for target, source in zip(self.shown.weights, self.generator.weights, strict=True):
            target.assign(source)
        for target, average in zip(self.shown.trainable_weights, self.weights, strict=True):
            target.assign(average)
        return self.shown


def held_images(images: np.ndarray, nbytes: int = 2**25) -> np.ndarray:
    """The training images as the step holds them: the uint8 pixels `prepare` scaled them from
    (a quarter of the memory: 2.5 GB instead of 9.8 GB for 50,000 images of 128x128x3), when
    every value is one of those pixels' (x - 127.5) / 127.5, which `from_held` restores exactly;
    otherwise float32 as given. Read `nbytes` at a time, so a memory-mapped array stays on disk."""
    pixels, start = np.empty(images.shape, np.uint8), 0
    for part in chunks(images, nbytes):
        part = part.astype(np.float32, copy=False)
        rounded = np.rint(part * 127.5 + 127.5).clip(0, 255).astype(np.uint8)
        if not np.array_equal(scale(rounded), part):
            return np.concatenate([part.astype(np.float32) for part in chunks(images, nbytes)])
        pixels[start : start + len(part)] = rounded
        start += len(part)
    return pixels


def from_held(images: tf.Tensor) -> tf.Tensor:
    """Gathered training images in [-1, 1] float32: uint8 ones looked up in the table of the
    256 values `prepare` wrote (a division in the graph would be folded into a multiplication
    by 1 / 127.5, which differs in the last bit for half the pixels)."""
    if images.dtype == tf.uint8:
        table = tf.constant(scale(np.arange(256, dtype=np.uint8)))
        return tf.gather(table, tf.cast(images, tf.int32))
    return images


def seen_by_d(params: TrainGanParams, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Images as D sees them: augmented with train_gan.diff_augment, else unchanged."""
    return augment(images, params.diff_augment, seed) if params.diff_augment else images


def training_side_state(discriminator: keras.Model) -> list:
    """What D's training calls change besides its updates, kept unchanged by the G update:
    batch-norm statistics and spectral norm's vectors (not the dropout RNG state), and the
    kernels Keras' SpectralNormalization rewrites as W / sigma in each training call."""
    statistics = [v for v in discriminator.non_trainable_variables if "seed_generator" not in v.path]
    normalized = [
        layer.kernel
        for layer in discriminator.layers
        if isinstance(layer, keras.layers.SpectralNormalization)
    ]
    return statistics + normalized


def progress_bar(gan: keras.Model, values: dict) -> dict:
    """The running means `fit()` shows (d1, d2, g, acc_real, acc_fake), updated with `values`."""
    for name, value in values.items():
        gan.trackers[name].update_state(value)
    results = {name: tracker.result() for name, tracker in gan.trackers.items()}
    if isinstance(gan.distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy):
        # Keras 3 reduces a multi-worker step's outputs along axis 0, which scalars lack
        # (tensorflow/tensorflow#72388): give them one
        results = {name: tf.reshape(value, [1]) for name, value in results.items()}
    return results


class DCGAN(keras.Model):
    """Holds G and D and their optimizers; `fit()` it on batches of real-image indices."""

    def __init__(
        self,
        discriminator: keras.Model,
        generator: keras.Model,
        real_images: tf.Tensor,
        params: TrainGanParams,
        steps_per_epoch: int,
    ):
        super().__init__()
        self.discriminator, self.generator = discriminator, generator
        self.real_images = real_images  # (N, H, W, C) uint8 or float32 (held_images), gathered per batch
        self.params = params
        self.loss = LOSSES[params.loss]
        self.seed_generator = keras.random.SeedGenerator(params.seed)
        self.steps_per_epoch = steps_per_epoch
        # per-iteration d1, d2, g of the current epoch, read once per epoch by a callback;
        # every replica holds the same values, so the first one's writes are kept
        first = tf.VariableAggregation.ONLY_FIRST_REPLICA
        self.loss_history = tf.Variable(tf.zeros((steps_per_epoch, 3)), trainable=False, aggregation=first)
        self.iteration = tf.Variable(0, dtype=tf.int64, trainable=False, aggregation=first)
        self.draws = StepDraws(params, generator.input_shape[-1], self.seed_generator, self.iteration)
        self.average = GeneratorAverage(generator, params.g_ema) if params.g_ema > 0 else None
        self.d_statistics = training_side_state(discriminator)
        self.built = True  # both networks are built; fit() under a strategy must not build it
        self.trackers = {
            name: keras.metrics.Mean(name=name) for name in ("d1", "d2", "g", "acc_real", "acc_fake")
        }

    def compile(
        self, d_optimizer: keras.optimizers.Optimizer, g_optimizer: keras.optimizers.Optimizer
    ) -> None:
        super().compile()
        self.d_optimizer, self.g_optimizer = d_optimizer, g_optimizer

    @property
    def metrics(self):
        return list(self.trackers.values())

    def state_variables(self) -> list:
        """Everything a resumed run needs to continue bit for bit: both networks (with their
        RNG states), both optimizers, the latent RNG, the iteration and this epoch's losses."""
        for optimizer, model in ((self.d_optimizer, self.discriminator), (self.g_optimizer, self.generator)):
            if not optimizer.built:
                optimizer.build(model.trainable_variables)
        return [
            *self.generator.variables,
            *self.discriminator.variables,
            *self.d_optimizer.variables,
            *self.g_optimizer.variables,
            self.seed_generator.state,
            self.iteration,
            self.loss_history,
            *(self.average.weights if self.average else []),
        ]

    def snapshot_generator(self) -> keras.Model:
        """The generator that snapshots, grids and quality scores show: G itself, or with
        `train_gan.g_ema` the copy holding the moving average of its weights."""
        return self.average.snapshot() if self.average else self.generator

    def discriminator_step(self, real_indices, d_step: int):
        """Steps 1 and 2 on this replica's (half-batch / replicas,) real indices; returns
        d1, d2 and D's outputs on the real and on the generated images."""
        local = tf.shape(real_indices)[0]  # this replica's share of the half-batch
        half = local * replicas()
        real_images = from_held(tf.gather(self.real_images, real_indices))  # (B/2 / replicas, H, W, C)
        real_targets = self.draws.discriminator_targets(0, tf.ones((local, 1)), half, d_step)
        augment_seed = self.draws.seed(6, d_step)
        d1, real_predictions = discriminator_update(
            self.discriminator,
            self.d_optimizer,
            seen_by_d(self.params, real_images, tf.random.experimental.stateless_fold_in(augment_seed, 0)),
            real_targets,
            self.loss.discriminator,
        )

        # generator in training mode, as in DCGAN practice (identical without batch norm)
        fake_images = self.generator(self.draws.random_latent_vectors(2, half, d_step), training=True)
        fake_targets = self.draws.discriminator_targets(3, tf.zeros((local, 1)), half, d_step)
        d2, fake_predictions = discriminator_update(
            self.discriminator,
            self.d_optimizer,
            seen_by_d(self.params, fake_images, tf.random.experimental.stateless_fold_in(augment_seed, 1)),
            fake_targets,
            self.loss.discriminator,
        )
        return d1, d2, real_predictions, fake_predictions

    def generator_step(self, half) -> tf.Tensor:
        """Step 3 on this replica's share of 2 * `half` latent points; D is left as it was
        (its weights, batch-norm statistics and spectral-norm state). Returns g."""
        k = self.params.d_steps
        d_state = [tf.identity(v) for v in self.d_statistics]
        random_latent_vectors = self.draws.random_latent_vectors(5, 2 * half, k - 1)
        with tf.GradientTape() as tape:
            generated = self.generator(random_latent_vectors, training=True)  # (B / replicas, H, W, C)
            predictions = self.discriminator(
                seen_by_d(self.params, generated, self.draws.seed(7, k - 1)), training=True
            )
            g = self.loss.generator(predictions)
            scaled_g = scaled(self.g_optimizer, g / replicas())
        gradients = tape.gradient(scaled_g, self.generator.trainable_weights)
        self.g_optimizer.apply_gradients(zip(gradients, self.generator.trainable_weights))
        for variable, value in zip(self.d_statistics, d_state):
            variable.assign(value)
        return g

    def train_step(self, real_indices):
        """One iteration on this replica's (half-batch / replicas, d_steps) real indices."""
        k = self.params.d_steps
        d_results = [self.discriminator_step(real_indices[:, j], j) for j in range(k)]
        d1, d2 = (tf.add_n([r[i] for r in d_results]) / k for i in (0, 1))  # the iteration's means
        real_predictions, fake_predictions = (tf.concat([r[i] for r in d_results], 0) for i in (2, 3))
        g = self.generator_step(tf.shape(real_indices)[0] * replicas())
        if self.average:
            self.average.update(self.iteration)

        g = global_mean(g)
        row = self.iteration % self.steps_per_epoch
        self.loss_history.assign(
            tf.tensor_scatter_nd_update(self.loss_history, [[row]], [tf.stack([d1, d2, g])])
        )
        self.iteration.assign_add(1)
        threshold = self.loss.threshold
        accuracies = (
            accuracy(real_predictions, True, threshold),
            accuracy(fake_predictions, False, threshold),
        )
        return progress_bar(self, dict(zip(self.trackers, (d1, d2, g, *accuracies))))
