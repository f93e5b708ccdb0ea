"""The DCGAN training step, written once: every variant is a parameter of it.

Per iteration, exactly the classic algorithm:
1. update D on a half-batch of real images (target 1, or smoothed / noisy / flipped),
2. update D on a half-batch of generated images (target 0, or flipped),
3. update G on a full batch of latent points with target 1 through D, leaving D unchanged.
The loop is Keras `fit()`; snapshots and tracking are callbacks (see training.py).
"""

import keras
import tensorflow as tf

from cifar_dcgan.config import TrainGanParams

bce = keras.losses.BinaryCrossentropy()


def discriminator_update(
    discriminator: keras.Model, optimizer: keras.optimizers.Optimizer, images: tf.Tensor, targets: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """One gradient step of D towards `targets`; returns (loss, predictions before the step)."""
    with tf.GradientTape() as tape:
        predictions = discriminator(images, training=True)  # (B, 1)
        loss = bce(targets, predictions)
        scaled_loss = scaled(optimizer, loss)
    gradients = tape.gradient(scaled_loss, discriminator.trainable_weights)
    optimizer.apply_gradients(zip(gradients, discriminator.trainable_weights))
    return loss, predictions


def scaled(optimizer: keras.optimizers.Optimizer, loss: tf.Tensor) -> tf.Tensor:
    """The loss to differentiate: scaled up under float16 loss scaling (the optimizer unscales)."""
    return optimizer.scale_loss(loss) if hasattr(optimizer, "scale_loss") else loss


def accuracy(predictions: tf.Tensor, real: bool) -> tf.Tensor:
    """Share of `predictions` on the right side of 0.5."""
    hits = predictions > 0.5 if real else predictions < 0.5
    return tf.reduce_mean(tf.cast(hits, tf.float32))


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
        self.real_images = real_images  # (N, 32, 32, 3), held once, gathered per batch
        self.params = params
        self.latent_dim = generator.input_shape[-1]
        self.seed_generator = keras.random.SeedGenerator(params.seed)
        self.steps_per_epoch = steps_per_epoch
        # per-iteration d1, d2, g of the current epoch, read once per epoch by a callback
        self.loss_history = tf.Variable(tf.zeros((steps_per_epoch, 3)), trainable=False)
        self.iteration = tf.Variable(0, dtype=tf.int64, trainable=False)
        # D's batch-norm statistics (not its dropout RNG state), kept unchanged by the G update
        self.d_statistics = [
            v for v in discriminator.non_trainable_variables if "seed_generator" not in v.path
        ]
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
        ]

    def random_latent_vectors(self, n) -> tf.Tensor:
        shape = (n, self.latent_dim)
        if self.params.latent_distribution == "uniform":
            return keras.random.uniform(shape, -1.0, 1.0, seed=self.seed_generator)
        return keras.random.normal(shape, seed=self.seed_generator)

    def discriminator_targets(self, labels: tf.Tensor) -> tf.Tensor:
        """Hard labels (1 real, 0 fake) -> D's targets: flipped, then one-sided smoothing and
        noise on whatever is labelled real."""
        p = self.params
        flip = keras.random.uniform(tf.shape(labels), seed=self.seed_generator) < p.label_flip
        labels = tf.where(flip, 1.0 - labels, labels)
        noise = keras.random.uniform(
            tf.shape(labels), -p.label_noise, p.label_noise, seed=self.seed_generator
        )
        return tf.clip_by_value(labels * (1.0 - p.label_smoothing + noise), 0.0, 1.0)

    def train_step(self, real_indices):
        half = tf.shape(real_indices)[0]
        real_images = tf.gather(self.real_images, real_indices)  # (B/2, 32, 32, 3)
        real_targets = self.discriminator_targets(tf.ones((half, 1)))
        d1, real_predictions = discriminator_update(
            self.discriminator, self.d_optimizer, real_images, real_targets
        )

        # generator in training mode, as in DCGAN practice (identical without batch norm)
        fake_images = self.generator(self.random_latent_vectors(half), training=True)
        fake_targets = self.discriminator_targets(tf.zeros((half, 1)))
        d2, fake_predictions = discriminator_update(
            self.discriminator, self.d_optimizer, fake_images, fake_targets
        )

        d_state = [tf.identity(v) for v in self.d_statistics]
        random_latent_vectors = self.random_latent_vectors(2 * half)  # (B, latent_dim)
        misleading_labels = tf.ones((2 * half, 1))
        with tf.GradientTape() as tape:
            predictions = self.discriminator(
                self.generator(random_latent_vectors, training=True), training=True
            )
            g = bce(misleading_labels, predictions)
            scaled_g = scaled(self.g_optimizer, g)
        gradients = tape.gradient(scaled_g, self.generator.trainable_weights)
        self.g_optimizer.apply_gradients(zip(gradients, self.generator.trainable_weights))
        for variable, value in zip(self.d_statistics, d_state):
            variable.assign(value)  # D's batch-norm statistics stay as the D updates left them

        row = self.iteration % self.steps_per_epoch
        self.loss_history[row].assign(tf.stack([d1, d2, g]))
        self.iteration.assign_add(1)
        values = {
            "d1": d1,
            "d2": d2,
            "g": g,
            "acc_real": accuracy(real_predictions, real=True),
            "acc_fake": accuracy(fake_predictions, real=False),
        }
        for name, value in values.items():
            self.trackers[name].update_state(value)
        return {name: tracker.result() for name, tracker in self.trackers.items()}
