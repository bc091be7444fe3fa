"""Image classification data: scikit-learn's bundled digits and MNIST IDX files, split reproducibly."""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from typing import NamedTuple

import numpy as np


class Split(NamedTuple):
    """Images (n, h, w) float32 in [0, 1] and integer labels (n,)."""

    images: np.ndarray
    labels: np.ndarray


def stratified_split(labels: np.ndarray, test_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint train / test indices with class proportions kept (seeded)."""
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(labels))
    train, test = train_test_split(indices, test_size=test_size, stratify=labels, random_state=seed)
    return np.sort(train), np.sort(test)


def load_digits(test_size: int, seed: int) -> tuple[Split, Split]:
    """The 1,797 8x8 digits bundled with scikit-learn (no download), pixel values scaled to [0, 1]."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = (bunch.images / 16.0).astype(np.float32)
    labels = bunch.target.astype(np.int32)
    train, test = stratified_split(labels, test_size, seed)
    return Split(images[train], labels[train]), Split(images[test], labels[test])


def read_idx(path: str) -> np.ndarray:
    """An IDX file (optionally gzipped) as a numpy array, per the MNIST format's magic number."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise ValueError(f"{path}: not a complete gzip file ({error}); truncated or corrupt download?") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    dtype = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}.get(data[2])
    if dtype is None:
        raise ValueError(f"{path}: unknown IDX element type 0x{data[2]:02x}")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    array = np.frombuffer(data, dtype=dtype, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape} but holds {array.size} values (truncated?)")
    return array.reshape(shape)


def _find(data_dir: str, stem: str) -> str | None:
    for name in (f"{stem}.gz", stem):
        path = os.path.join(data_dir, name)
        if os.path.exists(path):
            return path
    return None


def _pair(data_dir: str, prefix: str) -> Split | None:
    images = _find(data_dir, f"{prefix}-images-idx3-ubyte")
    labels = _find(data_dir, f"{prefix}-labels-idx1-ubyte")
    if images is None or labels is None:
        return None
    x, y = read_idx(images), read_idx(labels)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{data_dir}: {prefix} images ({x.shape[0]}) and labels ({y.shape[0]}) disagree")
    return Split((x / 255.0).astype(np.float32), y.astype(np.int32))


def load_mnist(data_dir: str, train_size: int, test_size: int, seed: int) -> tuple[Split, Split]:
    """MNIST from ``data_dir``: the training set's first ``train_size`` images and a seeded subset of the test
    set, or, when only ``t10k-*`` files are there, a stratified disjoint split of the test set."""
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(f"MNIST data_dir {data_dir!r} does not exist (expected t10k-images-idx3-ubyte[.gz] ...)")
    test = _pair(data_dir, "t10k")
    if test is None:
        raise FileNotFoundError(f"no t10k-images-idx3-ubyte[.gz] / t10k-labels-idx1-ubyte[.gz] in {data_dir!r}")
    train = _pair(data_dir, "train")
    rng = np.random.default_rng(seed)
    if train is not None:
        if train_size > len(train.labels) or test_size > len(test.labels):
            raise ValueError(f"asked for {train_size}/{test_size} images, have {len(train.labels)}/{len(test.labels)}")
        pick = np.sort(rng.choice(len(test.labels), test_size, replace=False))
        return Split(train.images[:train_size], train.labels[:train_size]), Split(test.images[pick], test.labels[pick])
    if train_size + test_size > len(test.labels):
        raise ValueError(
            f"only the {len(test.labels)}-image MNIST test set is in {data_dir!r}: train_size + test_size "
            f"({train_size} + {test_size}) must fit in it"
        )
    train_idx, test_idx = stratified_split(test.labels, test_size, seed)
    train_idx = np.sort(rng.permutation(train_idx)[:train_size])
    return Split(test.images[train_idx], test.labels[train_idx]), Split(test.images[test_idx], test.labels[test_idx])
