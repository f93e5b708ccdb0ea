"""Train the classic step at full size for a few iterations in a fresh process, as the
train-gan stage does (strategy first), and print a digest of every weight and loss."""

import hashlib
import sys

import keras
import numpy as np
import tensorflow as tf

from cifar_dcgan.config import load_params
from cifar_dcgan.config.model import ModelParams
from cifar_dcgan.config.train_gan import TrainGanParams
from cifar_dcgan.gan import DCGAN
from cifar_dcgan.losses import LOSSES
from cifar_dcgan.models import adam, build_discriminator, build_generator
from cifar_dcgan.training import make_strategy, real_index_batches

SHAPE = (32, 32, 3)  # CIFAR-10's images

params = load_params(sys.argv[1], ModelParams, TrainGanParams)
model, train = params["model"], params["train_gan"]
iterations = int(sys.argv[2])
make_strategy(train.distribute)  # before any other TensorFlow work, as in the stage
keras.utils.set_random_seed(train.seed)
images = np.random.default_rng(0).uniform(-1, 1, (1024, 32, 32, 3)).astype(np.float32)  # (N, 32, 32, 3)
gan = DCGAN(
    build_discriminator(model, train.seed, LOSSES[train.loss].activation, image_shape=SHAPE),
    build_generator(model, train.latent_dim, train.seed, image_shape=SHAPE),
    tf.constant(images),
    train,
    steps_per_epoch=iterations,
)
gan.compile(adam(train.d_learning_rate, train.beta1), adam(train.g_learning_rate, train.beta1))
half = train.batch_size // 2
gan.fit(
    real_index_batches(len(images), half, train.sampling, train.seed), steps_per_epoch=iterations, verbose=0
)
digest = hashlib.sha256()
for value in [*gan.generator.weights, *gan.discriminator.weights, gan.loss_history]:
    digest.update(np.asarray(value.numpy()).tobytes())
print(digest.hexdigest())
