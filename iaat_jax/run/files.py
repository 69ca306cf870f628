"""Every file the program reads or writes outside orbax: local paths and URLs alike.

URLs (gs://bucket/run, and TensorFlow's in-memory ram:// in tests) go through tf.io.gfile,
imported only when a URL is used, so local runs need no TensorFlow. Whole-file writes are
atomic: the bytes go to a temporary name beside the target, which is then renamed over it, so a
reader (or a rerun after a kill) sees the old file or the new one, never half of one.
"""

import io
import os
import uuid

import numpy as np


def is_url(path) -> bool:
    return "://" in str(path)


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def join(*parts) -> str:
    return "/".join(str(p).rstrip("/") for p in parts[:-1]) + "/" + str(parts[-1]).lstrip("/")


def exists(path) -> bool:
    return _gfile().exists(str(path)) if is_url(path) else os.path.exists(path)


def makedirs(path) -> None:
    if is_url(path):
        _gfile().makedirs(str(path))
    else:
        os.makedirs(path, exist_ok=True)


def read_bytes(path) -> bytes:
    if is_url(path):
        with _gfile().GFile(str(path), "rb") as file:
            return file.read()
    with open(path, "rb") as file:
        return file.read()


def read_text(path) -> str:
    return read_bytes(path).decode()


def write_bytes(path, data: bytes) -> None:
    """Write `data` to `path` atomically (temporary file, then rename over the target)."""
    temporary = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    if is_url(path):
        gfile = _gfile()
        with gfile.GFile(temporary, "wb") as file:
            file.write(data)
        gfile.rename(temporary, str(path), overwrite=True)
        return
    try:
        with open(temporary, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_text(path, text: str) -> None:
    write_bytes(path, text.encode())


def remove(path) -> None:
    if is_url(path):
        _gfile().remove(str(path))
    else:
        os.remove(path)


def save_npy(path, array: np.ndarray) -> None:
    """`array` as a .npy file at `path`, atomically."""
    buffer = io.BytesIO()
    np.save(buffer, array)
    write_bytes(path, buffer.getvalue())


def load_npy(path) -> np.ndarray:
    """A .npy file; ValueError (naming the file) if it is not a whole .npy array."""
    try:
        return np.load(io.BytesIO(read_bytes(path)), allow_pickle=False)
    except (ValueError, EOFError, OSError) as error:
        raise ValueError(f"{path} is not a readable .npy array ({error})") from error
