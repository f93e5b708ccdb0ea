"""A reproducible DCGAN pipeline for CIFAR-10: data preparation, a discriminator sanity
gate, GAN training and snapshot selection, each a DVC stage tracked in MLflow."""

__version__ = "0.1.0"

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up notices; set it to 0 to see them
# TensorFlow's oneDNN kernels, which it turns on by itself only on CPUs with AVX-512 VNNI/bf16 or
# AMX: on an AVX2-only CPU its own (Eigen) kernels run the float32 step 1.9x slower. Read once, when
# TensorFlow loads, so this must come before it; TF_ENABLE_ONEDNN_OPTS=0 turns them off.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
