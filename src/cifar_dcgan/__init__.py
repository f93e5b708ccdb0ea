"""A reproducible DCGAN pipeline for CIFAR-10: data preparation, a discriminator sanity
gate, GAN training and snapshot selection, each a DVC stage tracked in MLflow."""

__version__ = "0.1.0"

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up notices; set it to 0 to see them
