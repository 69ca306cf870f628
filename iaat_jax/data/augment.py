"""Image transforms in tf.data, stateless so that an epoch replays exactly on resume.

Each training transform takes a uint8 (or encoded JPEG) image and a seed [2] made from the
epoch and the example id, and returns uint8 [H, W, C]: images travel to the devices as uint8
and become float32 in [0, 1] there (sharding.device_batch). Resized ImageNet crops are rounded
to uint8, as the PIL images of the PyTorch pipelines are.
"""

import tensorflow as tf

IMAGENET_SIZE, IMAGENET_RESIZE = 224, 256


def identity(image: tf.Tensor) -> tf.Tensor:
    """Images as stored (uint8)."""
    return image


def _to_uint8(image: tf.Tensor) -> tf.Tensor:
    """A resized float image [H, W, C] on the 0-255 scale, rounded to uint8."""
    return tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8)


def cifar_train(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Reflect-pad 4, random 32x32 crop, random horizontal flip (the reference augmentation)."""
    height, width, channels = image.shape
    padded = tf.pad(image, [[4, 4], [4, 4], [0, 0]], mode="REFLECT")
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    cropped = tf.image.stateless_random_crop(padded, (height, width, channels), crop_seed)
    return tf.image.stateless_random_flip_left_right(cropped, flip_seed)


def imagenet_train(image_bytes: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Random-resized crop (area 8-100%, aspect 3/4-4/3) to 224, random horizontal flip."""
    box_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    shape = tf.image.extract_jpeg_shape(image_bytes)
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape,
        tf.zeros([0, 0, 4], tf.float32),
        seed=box_seed,
        area_range=(0.08, 1.0),
        aspect_ratio_range=(3 / 4, 4 / 3),
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    window = tf.stack([begin[0], begin[1], size[0], size[1]])
    crop = tf.image.decode_and_crop_jpeg(image_bytes, window, channels=3)
    crop = tf.image.resize(crop, (IMAGENET_SIZE, IMAGENET_SIZE), method="bicubic")
    return tf.image.stateless_random_flip_left_right(_to_uint8(crop), flip_seed)


def imagenet_eval(image_bytes: tf.Tensor) -> tf.Tensor:
    """Resize the shorter side to 256, centre crop 224."""
    image = tf.cast(tf.io.decode_jpeg(image_bytes, channels=3), tf.float32)
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = IMAGENET_RESIZE / tf.reduce_min(shape)
    resized = tf.image.resize(image, tf.cast(tf.round(shape * scale), tf.int32), method="bicubic")
    crop = tf.image.resize_with_crop_or_pad(resized, IMAGENET_SIZE, IMAGENET_SIZE)
    return _to_uint8(crop)
