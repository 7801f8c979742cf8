"""Data sets as uint8 image tensors, the train/val split, and the preprocessing fitted on train.

Shapes: N images of 3 x S x S (S = image_size), D = 3 * S * S features, C classes.
A data set is decoded once into one uint8 tensor (N, 3, S, S) and split; ``loaders.py`` batches it.

    split.py       Split, DataSet, carve_val (the one validation carve), shared file-system helpers
    folders.py     scanning an image folder and decoding its files
    imagecache.py  the decoded-image cache: its place, names, key, layout, and when to decode
    sources.py     SOURCES: torchvision's sets, image folders, the synthetic set; the memory check, load_dataset
    preprocess.py  Preprocess, fitted on the training split and stored in the checkpoint
    arrays.py      a caller's tensors, NumPy arrays, memmaps or DataLoader as a DataSet (LinearProbe.fit)

Problems a user can cause raise errors.DataError with a one-line message.
"""
from ..errors import DataError  # noqa: F401  (also importable from here, where it used to live)
from .folders import IMG_EXTENSIONS, image_transform, load_image
from .preprocess import Preprocess
from .sources import available_memory, decoded_bytes, free_memory, load_dataset, open_cifar10
from .split import DataSet, Split, carve_val, error_reason

__all__ = ["DataSet", "Split", "carve_val", "error_reason", "IMG_EXTENSIONS", "image_transform", "load_image",
           "Preprocess", "available_memory", "decoded_bytes", "free_memory", "load_dataset", "open_cifar10"]
