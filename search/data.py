"""CIFAR-10 as uint8 tensors: found, decoded once, cached, split, and augmented in whole batches.

Two layouts are read: torchvision's CIFAR-10 root (cifar-10-batches-py, downloaded by
torchvision when the machine is online) and an image folder with train/<class>/* and
test/<class>/* (torchvision's ImageFolder convention). Decoded splits are cached under the
user's cache dir, never in the data dir, which may be read-only.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from resnet_space.errors import UserError

from .layout import DEFAULT_VAL_SIZE, save_atomic

DATA_ENV = "RESNET_SEARCH_DATA"
CACHE_ENV = "RESNET_SEARCH_CACHE"
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif"}


class DataError(UserError):
    """Data that cannot be found or read; the message is one line that says what to do."""


def cache_root() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "resnet-search"


def default_data_root() -> Path:
    return Path(os.environ.get(DATA_ENV) or cache_root() / "cifar10")


@dataclass
class ImageSet:
    images: torch.Tensor  # uint8, (N, 3, 32, 32)
    labels: torch.Tensor  # int64, (N,)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> "ImageSet":
        return ImageSet(self.images[index], self.labels[index])


@dataclass
class Cifar10:
    train: ImageSet
    val: ImageSet
    test: ImageSet
    classes: list[str]
    name: str  # says which copy: true CIFAR-10 or an image-folder copy such as the JPEG one
    root: str
    fingerprint: str = ""  # of every image and label before the split: the same data wherever it lies

    def identity(self) -> str:
        return f"{self.name} #{self.fingerprint}"


def _is_image_folder(root: Path) -> bool:
    """Whether root is an image folder; one with train/ or test/ but not both is refused, never
    taken for torchvision's layout (which would download CIFAR-10 into it)."""
    train, test = (root / "train").is_dir(), (root / "test").is_dir()
    if train != test:
        have, lack = ("train", "test") if train else ("test", "train")
        raise DataError(f"{root} has {have}/ but no {lack}/: an image folder needs both, "
                        f"train/<class>/ and test/<class>/")
    return train


def _decode(path: Path) -> torch.Tensor:
    try:
        with Image.open(path) as im:
            image = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read image {path}: {str(e).splitlines()[0][:160]}") from None
    if image.shape != (3, 32, 32):
        raise DataError(f"image {path} is {image.shape[2]}x{image.shape[1]}, expected 32x32")
    return image


def _list_image_folder(split_dir: Path) -> tuple[list[Path], list[int], list[str]]:
    """Every image under split_dir/<class>/ with its label, and the class names. Anything else
    in a class folder is an error, found before a single image is decoded; hidden files and
    folders (.DS_Store, .ipynb_checkpoints) are not data and are skipped."""
    try:
        classes = sorted(d.name for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
    except OSError as e:
        raise DataError(f"cannot read {split_dir}: {e.strerror or e}") from None
    if len(classes) < 2:
        raise DataError(f"{split_dir} needs one folder per class (train/<class>/*.jpg), found {len(classes)}")
    files, labels = [], []
    for label, name in enumerate(classes):
        class_dir = split_dir / name
        try:  # a folder that cannot be listed, or a link to nowhere (a loop) in it
            entries = sorted((e for e in os.scandir(class_dir) if not e.name.startswith(".")), key=lambda e: e.name)
            stray = next((e for e in entries if not e.is_file() or Path(e.name).suffix.lower() not in IMAGE_SUFFIXES),
                         None)
        except OSError as e:
            raise DataError(f"cannot read {e.filename or class_dir}: {e.strerror or e}") from None
        if not entries:
            raise DataError(f"class folder {class_dir} has no images; add its images or remove the folder")
        if stray is not None:
            raise DataError(f"{class_dir / stray.name} is not an image ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                            f"move it out of {class_dir}")
        files += [class_dir / e.name for e in entries]
        labels += [label] * len(entries)
    return files, labels, classes


def _fingerprint(split_dir: Path, files: list[Path]) -> str:
    """Digest of every file's name, size and modification time: editing, adding, removing or
    renaming any image gives a new cache key, so a cache is never stale."""
    digest = hashlib.sha1(str(split_dir.resolve()).encode())
    for path in files:
        stat = path.stat()
        digest.update(f"{path.relative_to(split_dir)}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    return digest.hexdigest()[:16]


def _read_image_folder(split_dir: Path, files: list[Path], labels: list[int], status=None) -> ImageSet:
    """The listed images decoded, or read back from the cache written when they were last decoded."""
    cache = cache_root() / "decoded" / f"{split_dir.name}-{_fingerprint(split_dir, files)}.pt"
    if cache.exists():
        try:
            saved = torch.load(cache, weights_only=True)
            return ImageSet(saved["images"], saved["labels"])
        except Exception:  # a torn cache is rebuilt, never trusted
            cache.unlink(missing_ok=True)
    shown = f"decoding {len(files):,} images of {split_dir} (cached in {cache.parent} for later runs)"
    with status(shown) if status else contextlib.nullcontext(), \
            ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        images = torch.stack(list(pool.map(_decode, files, chunksize=256)))
    result = ImageSet(images, torch.tensor(labels, dtype=torch.int64))
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        save_atomic(cache, lambda tmp: torch.save({"images": result.images, "labels": result.labels}, tmp))
    except OSError:
        pass  # an unwritable cache only costs the next run a decode
    return result


def _read_torchvision(root: Path, download: bool) -> tuple[ImageSet, ImageSet, list[str]]:
    from torchvision.datasets import CIFAR10

    splits, made = [], [p for p in (root, *root.parents) if not p.exists()]  # innermost first
    for train in (True, False):
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(30)  # an unreachable host fails the download instead of hanging
        try:
            ds = CIFAR10(str(root), train=train, download=download)
        except Exception as e:  # noqa: BLE001 - torchvision raises many kinds when offline
            why = f"downloading it failed ({type(e).__name__}: {str(e).splitlines()[0][:120]})" if download \
                else "downloading is off"
            for folder in made:  # a failed download leaves no empty folders behind
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise DataError(
                f"no CIFAR-10 found at {root} (looked for {root}/train/<class>/ and {root}/cifar-10-batches-py) "
                f"and {why}; pass --data PATH or set {DATA_ENV}=PATH"
            ) from None
        finally:
            socket.setdefaulttimeout(previous)
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        splits.append(ImageSet(images, torch.tensor(ds.targets, dtype=torch.int64)))
    return splits[0], splits[1], list(ds.classes)


def stratified_order(labels: torch.Tensor, seed: int) -> torch.Tensor:
    """A seeded permutation that deals classes round-robin, so every prefix is stratified."""
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    shuffled = labels[perm]
    rank = torch.empty_like(perm)
    for c in shuffled.unique():
        where = (shuffled == c).nonzero().squeeze(1)
        rank[where] = torch.arange(len(where))
    return perm[torch.argsort(rank * (int(labels.max()) + 1) + shuffled, stable=True)]


def load_cifar10(root=None, *, val_size: int = DEFAULT_VAL_SIZE, limit_train: int | None = None, seed: int = 0,
                 download: bool = True, classes: int | None = None, status=None) -> Cifar10:
    """Train/validation/test splits. The validation split is carved from training images
    (seeded, stratified) and is what a search optimises; test is kept for the final evaluation.
    With `classes` (the networks' outputs), data with another number of classes is refused, for
    an image folder before a single image is decoded. status(message), a context manager (a
    spinner on a terminal), is held while images are decoded, which takes a while the first time."""
    named = root or os.environ.get(DATA_ENV)  # only the default in the user cache is made (downloaded)
    root = Path(root) if root else default_data_root()
    if root.exists() and not root.is_dir():
        raise DataError(f"data path {root} is not a directory")
    if named and not root.exists():
        raise DataError(f"data path {root} does not exist")
    if _is_image_folder(root):
        # Both splits are listed and checked before either is decoded, which takes minutes.
        train_files, train_labels, names = _list_image_folder(root / "train")
        test_files, test_labels, test_classes = _list_image_folder(root / "test")
        if test_classes != names:
            only_train = ", ".join(sorted(set(names) - set(test_classes))) or "none"
            only_test = ", ".join(sorted(set(test_classes) - set(names))) or "none"
            raise DataError(f"{root}/train and {root}/test need the same class folders; only in train: {only_train}; "
                            f"only in test: {only_test}")
        check_classes(root, classes, found=names)
        check_sizes(len(train_files), val_size, limit_train)
        full_train = _read_image_folder(root / "train", train_files, train_labels, status)
        test = _read_image_folder(root / "test", test_files, test_labels, status)
        jpeg = any(f.suffix.lower() in {".jpg", ".jpeg"} for f in train_files)
        name = f"{root.name} (image folder{', JPEG' if jpeg else ''})"
    else:
        full_train, test, names = _read_torchvision(root, download)
        check_classes(root, classes, found=names)
        check_sizes(len(full_train), val_size, limit_train)
        name = "CIFAR-10"
    digest = hashlib.sha1()
    for part in (full_train.images, full_train.labels, test.images, test.labels):
        digest.update(part.contiguous().numpy().tobytes())
    order = stratified_order(full_train.labels, seed)
    train_index = order[val_size:] if limit_train is None else order[val_size:val_size + limit_train]
    return Cifar10(full_train.subset(train_index), full_train.subset(order[:val_size]), test, names, name,
                   str(root), digest.hexdigest()[:16])


def check_sizes(images: int, val_size: int, limit_train: int | None) -> None:
    """Refuse a validation split or training limit the training images cannot hold."""
    if not 0 < val_size < images:
        raise DataError(f"validation size {val_size} must be between 1 and {images - 1}")
    if limit_train is not None and not 0 < limit_train <= images - val_size:
        raise DataError(f"training limit {limit_train} must be between 1 and the {images - val_size:,} "
                        "training images left after the validation split")


def check_classes(root: Path, classes: int | None, *, found: list[str]) -> None:
    """Refuse data with another number of classes than the networks' outputs (None: any):
    training would otherwise fail on the first label past the head, or never use some."""
    if classes is None or len(found) == classes:
        return
    names = ", ".join(found[:12]) + (", ..." if len(found) > 12 else "")
    raise DataError(f"data at {root} has {len(found)} classes ({names}) but the study's networks have "
                    f"{classes} outputs; set classes = {len(found)} in the study file's [space]")


# ---- augmentation: whole batches of tensors on the training device ----

def normalize(images: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    mean = torch.tensor(CIFAR10_MEAN, device=images.device, dtype=dtype).view(1, 3, 1, 1) * 255
    std = torch.tensor(CIFAR10_STD, device=images.device, dtype=dtype).view(1, 3, 1, 1) * 255
    return (images.to(dtype) - mean) / std


def random_grayscale(x: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """For a fraction p of a normalised batch: ITU-R 601 luma of the raw pixels (torchvision's
    Grayscale), normalised again per channel."""
    shape = (1, 3, 1, 1)
    mean = torch.tensor(CIFAR10_MEAN, device=x.device, dtype=x.dtype).view(shape)
    std = torch.tensor(CIFAR10_STD, device=x.device, dtype=x.dtype).view(shape)
    luma = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(shape)
    gray = ((x * std + mean) * luma).sum(1, keepdim=True)
    pick = torch.rand(len(x), generator=generator, device=x.device) < p
    return torch.where(pick[:, None, None, None], (gray - mean) / std, x)


def random_cutout(images: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Zero (the mean, after normalisation) a size x size square, possibly clipped, per image."""
    n, _, h, w = images.shape
    device = images.device
    top = torch.randint(0, h, (n, 1, 1), generator=generator, device=device) - size // 2
    left = torch.randint(0, w, (n, 1, 1), generator=generator, device=device) - size // 2
    ys = torch.arange(h, device=device).view(1, h, 1)
    xs = torch.arange(w, device=device).view(1, 1, w)
    inside = (ys >= top) & (ys < top + size) & (xs >= left) & (xs < left + size)
    return images.masked_fill(inside[:, None], 0)


class TrainingSet:
    """The training images prepared once on the training device, so that an augmented batch is
    one gather: normalised, zero-padded by the crop margin (0 is the mean colour after
    normalising), and with flips on, stored beside a mirrored copy. One index then picks an
    image, its crop offset and its mirror at once (docs/measurements.md measures what this buys)."""

    def __init__(self, images: torch.Tensor, recipe, dtype=torch.float32):
        """dtype: how the prepared images are stored (bf16 under CUDA's numerics). They are
        normalised in float32 and rounded once to dtype, not normalised in dtype."""
        self.n, self.recipe, self.margin = len(images), recipe, recipe.crop_padding
        x = F.pad(normalize(images).to(dtype), (self.margin,) * 4)
        if recipe.flip:
            x = torch.cat([x, x.flip(-1)])
        side = images.shape[-1]
        self.windows = x.unfold(2, side, 1).unfold(3, side, 1)  # a view: (n, 3, 2m+1, 2m+1, side, side)

    def batch(self, index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The images at `index`, randomly cropped, flipped, greyed and cut out per the recipe."""
        size, device = len(index), index.device
        dy = torch.randint(0, 2 * self.margin + 1, (size,), generator=generator, device=device)
        dx = torch.randint(0, 2 * self.margin + 1, (size,), generator=generator, device=device)
        if self.recipe.flip:
            index = index + self.n * (torch.rand(size, generator=generator, device=device) < 0.5)
        x = self.windows[index, :, dy, dx]
        if self.recipe.grayscale:
            x = random_grayscale(x, self.recipe.grayscale, generator)
        if self.recipe.cutout:
            x = random_cutout(x, self.recipe.cutout, generator)
        return x
