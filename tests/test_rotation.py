"""The rotation task behind the judge of unlabeled images: labels that match the turn, the
mirror applied before the turn (after it, 90 and 270 degrees would swap), and a judge that
learns the task on images with an up and a down."""

import numpy as np

from cifar_dcgan import evaluator
from cifar_dcgan.rotation import ROTATIONS, RotatedBatches, all_rotations, rotate
from cifar_dcgan.tracker import NullTracker
from conftest import TINY_EVALUATOR


def arrow(n: int = 1, side: int = 8) -> np.ndarray:
    """(n, side, side, 1) images: a bright top row and a bright left column, dark elsewhere."""
    images = np.full((n, side, side, 1), -1.0, np.float32)
    images[:, 0, :, 0] = 1.0
    images[:, :, 0, 0] = 0.5
    return images


def test_each_label_is_the_number_of_quarter_turns_counter_clockwise():
    image = arrow()[0]
    turned, labels = all_rotations(arrow())
    assert labels.tolist() == [0, 1, 2, 3]
    np.testing.assert_array_equal(turned[0], image)
    # a quarter turn counter-clockwise moves the top row to the left column, top to bottom
    np.testing.assert_array_equal(turned[1][:, 0, 0], image[0, ::-1, 0])
    np.testing.assert_array_equal(turned[2], image[::-1, ::-1])
    for k in range(ROTATIONS):
        np.testing.assert_array_equal(rotate(turned[k : k + 1], np.array([(4 - k) % 4]))[0], image)


def test_a_mirrored_batch_is_mirrored_before_it_is_turned():
    """Every image of a batch equals its label's turn of the original or of its mirror image;
    were the mirror applied after a turn of 90 degrees, the image would be the 270-degree one."""
    images = arrow(64)
    images[:, 0, -1, 0] = 0.0  # a marker that a mirror moves: the batch is not flip-symmetric
    batches = RotatedBatches(images, 16, seed=3, flip=True)
    upright, mirrored = images[0], images[0][:, ::-1]
    seen = set()
    for index in range(len(batches)):
        batch, labels = batches[index]
        for image, label in zip(batch, labels):
            plain = np.array_equal(image, np.rot90(upright, label))
            flipped = np.array_equal(image, np.rot90(mirrored, label))
            assert plain or flipped, f"label {label} does not match its image"
            seen.add((int(label), flipped))
    assert len(seen) == 2 * ROTATIONS  # every turn, mirrored and not
    again, _ = RotatedBatches(images, 16, seed=3, flip=True)[1]
    np.testing.assert_array_equal(again, batches[1][0])  # the same batch on a rerun


def test_a_rotation_judge_learns_which_way_is_up(make_params):
    rng = np.random.default_rng(0)
    images = arrow(600, side=16) + rng.normal(0, 0.2, (600, 16, 16, 1)).astype(np.float32)
    train, test = (images[:500], None), (images[500:], None)
    params = make_params("train_evaluator", **{**TINY_EVALUATOR, "epochs": 5})
    classifier, history = evaluator.train_classifier(train, test, params, NullTracker(), 0, verbose=0)
    assert classifier.output_shape == (None, ROTATIONS)
    rotated, labels = all_rotations(test[0])
    accuracy = np.mean(classifier.predict(rotated, verbose=0).argmax(axis=1) == labels)
    assert accuracy > 0.6 and history["val_accuracy"][-1] > 0.6  # chance: 0.25
