"""True FID of the chosen generator: InceptionV3's pool features (ImageNet weights) of
generated vs. real test images, as published FIDs are computed. Only `select-generator` uses
it, and only where the weights can be downloaded; FCD (cifar_dcgan.evaluator) needs none.
"""

import socket
from pathlib import Path

import keras
import numpy as np
from keras import layers

from cifar_dcgan.evaluator import frechet_distance
from cifar_dcgan.models import latent_points, load_model

INCEPTION_SIZE = 299  # InceptionV3's input side; smaller images are upsampled bilinearly


def inception_fid(
    generated_images: np.ndarray, real_images: np.ndarray, weights: str | None = "imagenet"
) -> tuple[float | None, str]:
    """True FID (InceptionV3 pool features, ImageNet weights) of generated vs. real images in
    [-1, 1]. Returns (fid, a one-line note); (None, why) when the weights cannot be loaded:
    they download once into the Keras cache (~/.keras/models) on a machine with internet."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(60)  # a firewalled network fails the download instead of hanging
    try:
        inception = keras.applications.InceptionV3(
            include_top=False, pooling="avg", weights=weights, input_shape=(INCEPTION_SIZE, INCEPTION_SIZE, 3)
        )
    except Exception as error:  # keras.utils.get_file raises a bare Exception when offline
        return None, (
            f"true FID skipped: the InceptionV3 ImageNet weights could not be loaded ({error}); "
            "with internet access they download once into ~/.keras/models. FCD is unaffected"
        )
    finally:
        socket.setdefaulttimeout(previous)
    inputs = keras.Input(generated_images.shape[1:])
    upsampled = layers.Resizing(INCEPTION_SIZE, INCEPTION_SIZE, interpolation="bilinear")(inputs)
    if generated_images.shape[-1] == 1:  # grey images: the same channel three times, as RGB
        upsampled = layers.Concatenate()([upsampled] * 3)
    model = keras.Model(inputs, inception(upsampled))  # inputs in [-1, 1], as InceptionV3 expects
    generated, real = (
        model.predict(np.asarray(images, np.float32), batch_size=50, verbose=0).astype(np.float64)
        for images in (generated_images, real_images)
    )  # (n, 2048) each
    fid = frechet_distance(
        generated.mean(axis=0), np.cov(generated, rowvar=False), real.mean(axis=0), np.cov(real, rowvar=False)
    )
    return fid, (
        f"true FID (InceptionV3, ImageNet weights) on {len(generated_images)} generated vs. "
        f"{len(real_images)} real test images: {fid:.2f} (published FIDs use 50,000 images; "
        "fewer images read higher)"
    )


def true_fid(
    generator_path: Path, test_images: np.ndarray, n: int, latent_distribution: str, seed: int = 0
) -> tuple[float | None, str]:
    """FID with InceptionV3 of `n` images of the generator vs. `n` real test images."""
    generator = load_model(generator_path)
    latents = latent_points(np.random.default_rng(seed), n, generator.input_shape[-1], latent_distribution)
    real = test_images[
        np.sort(np.random.default_rng(seed).choice(len(test_images), min(n, len(test_images)), replace=False))
    ]
    return inception_fid(generator.predict(latents, batch_size=500, verbose=0), real)
