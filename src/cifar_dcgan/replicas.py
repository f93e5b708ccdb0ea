"""The step's arithmetic under a `tf.distribute` strategy: how many replicas share a batch,
the global batch's mean, and each replica's rows of a tensor drawn for the global batch."""

import tensorflow as tf


def replicas() -> int:
    """Replicas training in sync: 1 outside a distribution strategy (and while Keras traces
    shapes in the strategy's cross-replica context)."""
    context = tf.distribute.get_replica_context()
    return context.num_replicas_in_sync if context else 1


def global_mean(value: tf.Tensor) -> tf.Tensor:
    """The mean over replicas of a per-replica mean: the global batch's mean."""
    if replicas() == 1:
        return value
    return tf.distribute.get_replica_context().all_reduce("MEAN", value)


def replica_share(values: tf.Tensor) -> tf.Tensor:
    """This replica's rows of a tensor drawn for the global batch."""
    n = replicas()
    if n == 1:
        return values
    rows = tf.shape(values)[0] // n
    start = tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group, tf.int32) * rows
    return values[start : start + rows]
