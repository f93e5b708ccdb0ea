"""The rotation task that trains a judge on images without labels (Gidaris et al., "Unsupervised
representation learning by predicting image rotations", ICLR 2018): each image is turned by
k x 90 degrees and the network predicts k. Telling upright from turned needs knowledge of
shapes (where a face's eyes are, which way a cat stands), so its features can judge
generated images as a classifier's do. On data that looks the same turned (textures, stars,
top-down photos) the task is meaningless: the judge's accuracy says so.
"""

import math

import keras
import numpy as np

ROTATIONS = 4  # 0, 90, 180 and 270 degrees: the labels 0..3


def rotate(images: np.ndarray, turns: np.ndarray) -> np.ndarray:
    """(n, H, W, C) square images, each turned counter-clockwise `turns[i]` x 90 degrees."""
    images = np.asarray(images)  # a memory-mapped slice: read once
    out = np.empty_like(images)
    for k in range(ROTATIONS):
        chosen = turns == k
        out[chosen] = np.rot90(images[chosen], k, axes=(1, 2))
    return out


def all_rotations(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every image in each of the four rotations, with its label: the judge's test set."""
    turns = np.repeat(np.arange(ROTATIONS), len(images))
    return rotate(np.concatenate([images] * ROTATIONS), turns), turns.astype(np.uint8)


class RotatedBatches(keras.utils.PyDataset):
    """Shuffled batches of `images`, each image mirrored at random and then turned by a random
    k x 90 degrees, labelled k. The mirror comes first: a horizontal flip after a rotation of
    90 degrees gives the image of a 270-degree one, and its label would be wrong."""

    def __init__(self, images: np.ndarray, batch_size: int, seed: int, flip: bool, **kwargs):
        super().__init__(**kwargs)
        self.images, self.batch_size, self.seed, self.flip = images, batch_size, seed, flip
        self.epoch = 0
        self.order = np.random.default_rng((seed, 0)).permutation(len(images))

    def __len__(self) -> int:
        return math.ceil(len(self.images) / self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng((self.seed, self.epoch, index))  # the same batch on a rerun
        chosen = np.sort(self.order[index * self.batch_size : (index + 1) * self.batch_size])
        batch = np.asarray(self.images[chosen])  # (B, H, W, C)
        if self.flip:
            mirrored = rng.random(len(batch)) < 0.5
            batch[mirrored] = batch[mirrored, :, ::-1]
        turns = rng.integers(0, ROTATIONS, len(batch))
        return rotate(batch, turns), turns.astype(np.uint8)

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self.order = np.random.default_rng((self.seed, self.epoch)).permutation(len(self.images))
