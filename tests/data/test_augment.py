"""Stateless augmentation: uint8, random per seed, replayable, a real crop of the padding."""

import numpy as np
import tensorflow as tf

from iaat_jax.data import augment


def test_cifar_augmentation_pads_crops_flips_within_the_pixel_range():
    image = tf.constant(np.random.default_rng(0).integers(0, 256, (32, 32, 3)), tf.uint8)
    outputs = [augment.cifar_train(image, tf.constant([7, i], tf.int64)).numpy() for i in range(6)]
    for out in outputs:
        assert out.shape == (32, 32, 3) and out.dtype == np.uint8  # to float on the devices
    assert any(not np.array_equal(outputs[0], out) for out in outputs[1:])  # random per seed
    again = augment.cifar_train(image, tf.constant([7, 0], tf.int64)).numpy()
    np.testing.assert_array_equal(outputs[0], again)  # stateless: a resumed epoch replays it
    # a crop of the reflect-padded image: the centre 24x24 of the source appears in every output
    source = image.numpy()
    for out in outputs:
        candidates = [out, out[:, ::-1]]
        assert any(
            np.array_equal(c[dy : dy + 24, dx : dx + 24], source[4:28, 4:28])
            for c in candidates
            for dy in range(9)
            for dx in range(9)
        )
