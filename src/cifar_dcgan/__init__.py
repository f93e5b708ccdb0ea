"""A reproducible DCGAN pipeline for CIFAR-10: data preparation, a discriminator sanity
gate, GAN training and snapshot selection, each a DVC stage tracked in MLflow."""

__version__ = "0.1.0"
