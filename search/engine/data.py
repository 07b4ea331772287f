"""Image data as uint8 tensors: found, decoded once, cached, split, described, and augmented in
whole batches.

Three sources are read: an image folder with train/<class>/* and test/<class>/* (torchvision's
ImageFolder convention) of square RGB or grayscale images of one side from 16 to 128 pixels; a
named data set (cifar10, cifar100, svhn, fashion-mnist), read by torchvision from the user's
cache and downloaded there when the machine is online; and a folder holding one of those in
torchvision's own layout. Decoded folders are cached under the user's cache dir, never in the
data dir, which may be read-only. Every load ends in a DataDescription: what the networks are
built for and how images are normalised, recorded with the study.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import pickle
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from resnet_space import Shape
from resnet_space.errors import UserError
from resnet_space.spec import MAX_SIDE, MIN_SIDE

from .files import DATA_ENV, NAMED, Named, cache_root, named_key, save_atomic

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp"}
CACHE_FORMAT = 2  # bumped when what a decoded cache holds changes, so an old one is never read
GRAY_MODES = {"1", "L", "I", "I;16", "F"}  # PIL modes of one channel, read as 8-bit gray


class DataError(UserError):
    """Data that cannot be found or read; the message is one line that says what to do."""


class UnsafeFile(UserError):
    """A file of tensors (a checkpoint, a decoded cache) that names code to run: refused unread."""


def load_plain(path: Path, what: str):
    """A file torch.save wrote, read with weights_only: tensors, numbers, strings, lists and dicts.
    One naming anything else (a class, a function: how a crafted file runs code as it is loaded)
    raises UnsafeFile; a torn or foreign file raises what torch raises for it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "global" in str(e).lower():  # torch names the class or function it refused to import
            raise UnsafeFile(f"{what} {path} names code to run, not only tensors: refused unread; delete it "
                             "(resnet-search never writes such a file)") from None
        raise


@dataclass
class ImageSet:
    images: torch.Tensor  # uint8, (N, channels, side, side)
    labels: torch.Tensor  # int64, (N,)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> "ImageSet":
        return ImageSet(self.images[index], self.labels[index])


@dataclass(frozen=True)
class DataDescription:
    """What a study's data is: the one account of it that the engine, the export, the report and
    `retrain` read (and the study records), built when the data is loaded."""

    name: str  # which data: "CIFAR-10", or a folder's name and kind, e.g. "cifar10-jpeg (image folder, JPEG)"
    root: str
    classes: tuple[str, ...]  # names, in label order
    side: int  # square images of side x side pixels
    channels: int  # 3 (RGB) or 1 (grayscale)
    mean: tuple[float, ...]  # per channel, of the training split's pixels scaled to [0, 1]
    std: tuple[float, ...]
    fingerprint: str  # of every image and label before the split: the same data wherever it lies

    @property
    def shape(self) -> Shape:
        return Shape(self.side, self.channels, len(self.classes))

    def identity(self) -> str:
        return f"{self.name} #{self.fingerprint}"

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "DataDescription":
        return cls(**{**data, **{k: tuple(data[k]) for k in ("classes", "mean", "std")}})

    def stats(self, device=None, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """The per-channel mean and std of pixels in [0, 1], shaped (1, channels, 1, 1) to broadcast."""
        shape = (1, self.channels, 1, 1)
        return tuple(torch.tensor(v, device=device, dtype=dtype).view(shape) for v in (self.mean, self.std))

    def normalize(self, images: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
        """uint8 images as the networks take them: each channel less its mean, over its std."""
        mean, std = self.stats(images.device, dtype)
        return (images.to(dtype) - mean * 255) / (std * 255)


@dataclass
class Dataset:
    train: ImageSet
    val: ImageSet
    test: ImageSet
    description: DataDescription

    @property
    def name(self) -> str:
        return self.description.name

    @classmethod
    def of(cls, train: ImageSet, val: ImageSet, test: ImageSet, classes, name: str, root: str = "",
           fingerprint: str = "") -> "Dataset":
        """Splits in memory, described: their shape from the images, the normalisation measured
        on `train`."""
        mean, std = channel_stats(train.images)
        images = train.images
        return cls(train, val, test, DataDescription(name, str(root), tuple(classes), images.shape[-1],
                                                     images.shape[1], mean, std, fingerprint))

    def fewer_train(self, images: int) -> "Dataset":
        """The same data with only the first `images` training images (the split's order deals
        classes round-robin, so they stay stratified), normalised as the whole: a cheap fidelity
        whose networks are built and fed exactly as on all of them."""
        if not 0 < images <= len(self.train):
            raise DataError(f"--trial-images {images:,} must be between 1 and the {len(self.train):,} training images")
        return dataclasses.replace(self, train=self.train.subset(torch.arange(images)))


def _is_image_folder(root: Path) -> bool:
    """Whether root is an image folder; one with train/ or test/ but not both is refused, never
    taken for torchvision's layout (which would download into it)."""
    train, test = (root / "train").is_dir(), (root / "test").is_dir()
    if train != test:
        have, lack = ("train", "test") if train else ("test", "train")
        raise DataError(f"{root} has {have}/ but no {lack}/: an image folder needs both, "
                        f"train/<class>/ and test/<class>/")
    return train


def _check_side(path: Path, width: int, height: int, side: int | None) -> None:
    """The one size rule: square, from MIN_SIDE to MAX_SIDE, and every image the side of the first."""
    if width != height:
        raise DataError(f"image {path} is {width}x{height}, not square: resize or crop every image to one square "
                        "side first")
    if not MIN_SIDE <= width <= MAX_SIDE:
        raise DataError(f"image {path} is {width}x{height}: sides from {MIN_SIDE} to {MAX_SIDE} pixels are "
                        "supported; resize the images first")
    if side is not None and width != side:
        raise DataError(f"image {path} is {width}x{height} but the first image is {side}x{side}: every image "
                        "must have the same side; resize them first")


def _image_kind(path: Path, im: Image.Image) -> int:
    """The channels an image is read with: 1 for a grayscale mode, else 3; refuses alpha."""
    if "A" in im.mode or "transparency" in im.info:
        raise DataError(f"image {path} has an alpha channel ({im.mode}, {len(im.getbands())} channels): "
                        "save it as RGB or grayscale")
    return 1 if im.mode in GRAY_MODES else 3


def _first_image(path: Path) -> tuple[int, int]:
    """(side, channels) of a folder's first training image, from its header alone: the rule for
    every other image (the same side; colour, or grayscale if the first is grayscale)."""
    try:
        with Image.open(path) as im:
            _check_side(path, *im.size, None)
            return im.size[0], _image_kind(path, im)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read image {path}: {str(e).splitlines()[0][:160]}") from None


def _decode(path: Path, side: int, channels: int, first: Path) -> np.ndarray:
    """One image as uint8, (side, side) in a grayscale folder, else (side, side, 3): a grayscale
    image in a colour folder is read as colour; a colour one in a grayscale folder is refused."""
    try:
        with Image.open(path) as im:
            _check_side(path, *im.size, side)
            if _image_kind(path, im) > channels:
                raise DataError(f"image {path} is colour ({im.mode}) but the first image, {first}, is grayscale: "
                                "a grayscale folder must be all grayscale")
            if im.mode.startswith("I"):  # 16-bit (or 32-bit integer) grayscale: scaled to 8 bits, not clipped
                return _to_8_bit(path, np.asarray(im), channels)
            return np.array(im.convert("L" if channels == 1 else "RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read image {path}: {str(e).splitlines()[0][:160]}") from None


def _to_8_bit(path: Path, pixels: np.ndarray, channels: int) -> np.ndarray:
    """16-bit gray levels (0 to 65535) as 8-bit ones, rounded: 65535 is 255, 257 is 1."""
    if pixels.min() < 0 or pixels.max() > 65535:
        raise DataError(f"image {path} has gray levels outside 16 bits ({pixels.min()} to {pixels.max()}): "
                        "save it as 8- or 16-bit grayscale")
    gray = ((pixels.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    return gray if channels == 1 else np.repeat(gray[..., None], 3, axis=-1)


def _list_image_folder(split_dir: Path, least: int) -> tuple[list[Path], list[int], list[str]]:
    """Every image under split_dir/<class>/ with its label, and the class names; each class needs
    `least` images. Anything else in a class folder is an error, found before a single image is
    decoded; hidden files and folders (.DS_Store, .ipynb_checkpoints) are not data and are skipped."""
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
        if stray is not None:
            raise DataError(f"{class_dir / stray.name} is not an image ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                            f"move it out of {class_dir}")
        if not entries:
            raise DataError(f"class folder {class_dir} has no images; add its images or remove the folder")
        if len(entries) < least:
            raise DataError(f"class folder {class_dir} has {len(entries)} image, a training class needs at least "
                            f"{least} (one to train on, one to validate on); add images or remove the folder")
        files += [class_dir / e.name for e in entries]
        labels += [label] * len(entries)
    return files, labels, classes


def _fingerprint(split_dir: Path, files: list[Path]) -> str:
    """Digest of every file's name, size and modification time: editing, adding, removing or
    renaming any image gives a new cache key, so a cache is never stale."""
    digest = hashlib.sha1(f"{split_dir.resolve()}\0{CACHE_FORMAT}".encode())
    for path in files:
        stat = path.stat()
        digest.update(f"{path.relative_to(split_dir)}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    return digest.hexdigest()[:16]


def _read_image_folder(split_dir: Path, files: list[Path], labels: list[int], first: Path, shape: Shape,
                       status=None, decoded: list | None = None) -> ImageSet:
    """The listed images decoded (by the rule of the first image, `first`: its side and channels),
    or read back from the cache written when they were last decoded. A fresh decode is appended
    to `decoded` as (cache file, images), for DataSource.keep_decoded to cache once nothing
    refuses the run."""
    cache = cache_root() / "decoded" / f"{split_dir.name}-{_fingerprint(split_dir, files)}.pt"
    if cache.exists():
        try:
            saved = load_plain(cache, "decoded-image cache")
            return ImageSet(saved["images"], saved["labels"])
        except UnsafeFile:
            raise
        except Exception:  # noqa: BLE001 - a torn cache is decoded again, never trusted
            pass
    shown = f"decoding {len(files):,} images of {split_dir} (cached in {cache.parent} for later runs)"
    with status(shown) if status else contextlib.nullcontext(), \
            ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        images = torch.from_numpy(np.stack(list(pool.map(
            lambda path: _decode(path, shape.side, shape.channels, first), files, chunksize=256))))
    images = images[:, None] if shape.channels == 1 else images.permute(0, 3, 1, 2).contiguous()
    result = ImageSet(images, torch.tensor(labels, dtype=torch.int64))
    if decoded is not None:
        decoded.append((cache, result))
    return result


def _write_cache(cache: Path, images: ImageSet) -> None:
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        save_atomic(cache, lambda tmp: torch.save({"images": images.images, "labels": images.labels}, tmp))
    except OSError:
        pass  # an unwritable cache only costs the next run a decode


def _read_torchvision(named: Named, root: Path, download: bool) -> tuple[ImageSet, ImageSet, list[str]]:
    """A named data set's train and test splits as torchvision reads them from `root`, downloaded
    there first when `download` and they are not there yet (torchvision checks every file's md5)."""
    import torchvision.datasets

    kind = getattr(torchvision.datasets, named.dataset)
    splits, made = [], [p for p in (root, *root.parents) if not p.exists()]  # innermost first
    for train in (True, False):
        split = {"split": "train" if train else "test"} if named.dataset == "SVHN" else {"train": train}
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(30)  # an unreachable host fails the download instead of hanging
        try:
            ds = kind(str(root), download=download, **split)
        except Exception as e:  # noqa: BLE001 - torchvision raises many kinds when offline or corrupt
            why = f"downloading it failed ({type(e).__name__}: {str(e).splitlines()[0][:120]})" if download \
                else f"it is not there ({str(e).splitlines()[0][:80]}) and downloading is off"
            for folder in made:  # a failed download leaves no empty folders behind
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise DataError(f"no {named.title} found in {root} (looked for {root / named.marker}) and {why}; "
                            f"pass --data PATH or set {DATA_ENV}=PATH") from None
        finally:
            socket.setdefaulttimeout(previous)
        images = torch.as_tensor(np.asarray(ds.data))
        if images.ndim == 3:  # (N, H, W): grayscale
            images = images[:, None]
        elif images.shape[-1] == 3:  # (N, H, W, 3)
            images = images.permute(0, 3, 1, 2)
        labels = getattr(ds, "targets", None)
        labels = ds.labels if labels is None else labels
        splits.append(ImageSet(images.contiguous(), torch.as_tensor(np.asarray(labels), dtype=torch.int64)))
    classes = list(getattr(ds, "classes", None) or [str(d) for d in range(10)])  # SVHN names none: digits
    return splits[0], splits[1], classes


def stratified_order(labels: torch.Tensor, seed: int) -> torch.Tensor:
    """A seeded permutation that deals classes round-robin, so every prefix is stratified."""
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    shuffled = labels[perm]
    rank = torch.empty_like(perm)
    for c in shuffled.unique():
        where = (shuffled == c).nonzero().squeeze(1)
        rank[where] = torch.arange(len(where))
    return perm[torch.argsort(rank * (int(labels.max()) + 1) + shuffled, stable=True)]


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images, scaled to [0, 1], summed exactly
    in integers (in chunks, so 50,000 images never need a float copy). A channel that never
    varies gets a deviation of one pixel level, not 0, which would divide its images by zero."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for chunk in images.split(4096):
        wide = chunk.to(torch.int64)
        total += wide.sum((0, 2, 3)).double()
        squares += (wide * wide).sum((0, 2, 3)).double()
    n = images.numel() // images.shape[1]
    mean = total / n
    std = (squares / n - mean * mean).clamp(min=0).sqrt() * (n / max(n - 1, 1)) ** 0.5
    return tuple((mean / 255).tolist()), tuple((std.clamp(min=1) / 255).tolist())


@dataclass
class DataSource:
    """Data found and checked, not yet decoded: where it lies, what it is, its shape (for a folder,
    from the listing and the first image's header), and how to read it. `load` decodes it."""

    root: Path
    named: Named | None  # None: an image folder
    names: list[str]  # the classes, in label order
    shape: Shape
    listing: dict | None = None  # an image folder's (files, labels) per split
    arrays: tuple[ImageSet, ImageSet] | None = None  # a named data set's splits, as torchvision read them
    decoded: list = field(default_factory=list)  # (cache file, images) decoded by load, not cached yet

    def keep_decoded(self) -> None:
        """Cache what load decoded, once nothing refuses the run (a refusal leaves no cache)."""
        while self.decoded:
            _write_cache(*self.decoded.pop())

    @property
    def train_images(self) -> int:
        return len(self.listing["train"][0]) if self.listing else len(self.arrays[0])

    def load(self, *, val_size: int, limit_train: int | None = None, seed: int = 0,
             status=None) -> "Dataset":
        """Train/validation/test splits and their description. The validation split is carved
        from training images (seeded, stratified) and is what a search optimises; test is kept for
        the final evaluation. status(message), a context manager (a spinner on a terminal), is
        held while images are decoded, the first time."""
        check_sizes(self.train_images, val_size, limit_train)
        if self.named is None:
            (train_files, train_labels), (test_files, test_labels) = self.listing["train"], self.listing["test"]
            first = train_files[0]
            full_train = _read_image_folder(self.root / "train", train_files, train_labels, first, self.shape, status,
                                            self.decoded)
            test = _read_image_folder(self.root / "test", test_files, test_labels, first, self.shape, status,
                                      self.decoded)
            jpeg = any(f.suffix.lower() in {".jpg", ".jpeg"} for f in train_files)
            name = f"{self.root.name} (image folder{', JPEG' if jpeg else ''})"
        else:
            (full_train, test), name = self.arrays, self.named.title
        digest = hashlib.sha1()
        for part in (full_train.images, full_train.labels, test.images, test.labels):
            digest.update(part.contiguous().numpy().tobytes())
        order = stratified_order(full_train.labels, seed)
        train_index = order[val_size:] if limit_train is None else order[val_size:val_size + limit_train]
        return Dataset.of(full_train.subset(train_index), full_train.subset(order[:val_size]), test, self.names, name,
                          str(self.root.resolve()), digest.hexdigest()[:16])


def find_data(root=None, *, classes: int | None = None, download: bool = True,
              network: str | None = None) -> DataSource:
    """The data at `root`, found and checked before anything is decoded. root: a name (cifar10,
    cifar100, svhn, fashion-mnist: read from the user's cache, downloaded there when `download`
    and online), or a path that exists: an image folder, or a folder in torchvision's layout of one
    of those. With no root, RESNET_SEARCH_DATA, else CIFAR-10 in the cache. With `classes` (what
    a study file states, or what `network`, a spec's summary, outputs), data with another number
    of classes is refused."""
    text = str(root or os.environ.get(DATA_ENV) or "cifar10")
    if text in NAMED:
        path, named = cache_root() / text, NAMED[text]
    else:
        path = Path(text)
        if not path.exists():
            raise DataError(f"data path {path} does not exist (a named data set is one of {', '.join(NAMED)})")
        if not path.is_dir():
            raise DataError(f"data path {path} is not a directory")
        named = None if _is_image_folder(path) else next(
            (named for named in NAMED.values() if (path / named.marker).exists()), False)
        if named is False:
            raise DataError(f"data path {path} is neither an image folder (train/<class>/ and test/<class>/) nor "
                            f"a torchvision data set (looked for {', '.join(n.marker for n in NAMED.values())})")
    if named is not None:
        train, test, names = _read_torchvision(named, path, download)
        check_classes(path, classes, found=names, network=network)
        return DataSource(path, named, names, Shape(train.images.shape[-1], train.images.shape[1], len(names)),
                          arrays=(train, test))
    train_files, train_labels, names = _list_image_folder(path / "train", least=2)
    test_files, test_labels, test_classes = _list_image_folder(path / "test", least=1)
    if test_classes != names:
        only_train = ", ".join(sorted(set(names) - set(test_classes))) or "none"
        only_test = ", ".join(sorted(set(test_classes) - set(names))) or "none"
        raise DataError(f"{path}/train and {path}/test need the same class folders; only in train: {only_train}; "
                        f"only in test: {only_test}")
    check_classes(path, classes, found=names, network=network)
    side, channels = _first_image(train_files[0])
    return DataSource(path, None, names, Shape(side, channels, len(names)),
                      listing={"train": (train_files, train_labels), "test": (test_files, test_labels)})


def training_images(root=None, val_size: int = 0, limit_train: int | None = None) -> int:
    """How many images a run trains on, without decoding (or downloading) any: a named data set's
    known count, a folder's listing; less the validation split, or the training limit."""
    text = str(root or os.environ.get(DATA_ENV) or "cifar10")
    total = NAMED[text].train_images if text in NAMED else find_data(text).train_images
    return limit_train or max(total - val_size, 0)


def load_data(root=None, *, val_size: int, limit_train: int | None = None, seed: int = 0,
              download: bool = True, classes: int | None = None, network: str | None = None, status=None) -> Dataset:
    """find_data(...).load(...): the data found, checked, decoded and cached."""
    source = find_data(root, classes=classes, download=download, network=network)
    data = source.load(val_size=val_size, limit_train=limit_train, seed=seed, status=status)
    source.keep_decoded()
    return data


def check_sizes(images: int, val_size: int, limit_train: int | None) -> None:
    """Refuse a validation split or training limit the training images cannot hold."""
    if not 0 < val_size < images:
        raise DataError(f"validation size {val_size} must be between 1 and {images - 1}")
    if limit_train is not None and not 0 < limit_train <= images - val_size:
        raise DataError(f"training limit {limit_train} must be between 1 and the {images - val_size:,} "
                        "training images left after the validation split")


def check_classes(root: Path, classes: int | None, *, found: list[str], network: str | None = None) -> None:
    """Refuse data with another number of classes than a study file states, or than `network` (a
    spec's summary) has outputs; None: any. Training would otherwise fail on the first label past
    the head, or never use some."""
    if classes is None or len(found) == classes:
        return
    names = ", ".join(found[:12]) + (", ..." if len(found) > 12 else "")
    if network:
        raise DataError(f"data at {root} has {len(found)} classes ({names}) but network {network} has {classes} "
                        "outputs")
    raise DataError(f"data at {root} has {len(found)} classes ({names}) but the study file states classes = "
                    f"{classes}; set classes = {len(found)} in its [space], or remove the key to take the data's")


def study_data_root(recorded: dict | None, given=None) -> str:
    """Where a study's images are read again (`best --export`, `retrain`): `given` (--data), else
    RESNET_SEARCH_DATA, else the named data set the study recorded. A folder the database names is
    never read: anyone who can write the database could have put that path there."""
    if given or os.environ.get(DATA_ENV):
        return str(given or os.environ[DATA_ENV])
    name = (recorded or {}).get("name")
    if (key := named_key(name)) is not None:
        return key
    raise DataError(f"the study was run on {name!r}: pass --data with its folder, or set {DATA_ENV} "
                    "(a folder is never taken from the database)")


def load_for(spec, root=None, fingerprint: str | None = None, **split) -> Dataset:
    """The data a network was trained on (`split`: load()'s val_size, limit_train and seed), refused,
    before any decode where the listing shows it, when the network is built for other classes,
    images or channels, and after it when its images are not those of `fingerprint` (the study's)."""
    source = find_data(root, classes=spec.classes, download=False, network=spec.summary())
    data = source.load(**split)
    check_shape(spec, data.description, spec.summary())
    if fingerprint is not None and data.description.fingerprint != fingerprint:
        raise DataError(f"the data at {data.description.root} is not the data the study was run on (images "
                        f"fingerprint {data.description.fingerprint}, the study's {fingerprint}); pass --data with "
                        "the study's own")
    source.keep_decoded()
    return data


def check_shape(spec, description: DataDescription, what: str) -> None:
    """Refuse a network built for other images or classes than the data's."""
    if spec.shape != description.shape:
        raise DataError(f"{what} is built for {spec.shape} but the data at {description.root} is "
                        f"{description.shape}")


# ---- augmentation: whole batches of tensors on the training device ----

def random_grayscale(x: torch.Tensor, p: float, generator: torch.Generator,
                     description: DataDescription) -> torch.Tensor:
    """For a fraction p of a normalised colour batch: ITU-R 601 luma of the raw pixels
    (torchvision's Grayscale), normalised again per channel. A grayscale batch is returned as it is."""
    if x.shape[1] == 1:
        return x
    mean, std = description.stats(x.device, x.dtype)
    luma = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
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

    def __init__(self, images: torch.Tensor, recipe, description: DataDescription, dtype=torch.float32):
        """dtype: how the prepared images are stored (bf16 under CUDA's numerics). They are
        normalised (as `description` says) in float32 and rounded once to dtype, not normalised in dtype."""
        self.n, self.recipe, self.margin, self.description = len(images), recipe, recipe.crop_padding, description
        x = F.pad(description.normalize(images).to(dtype), (self.margin,) * 4)
        if recipe.flip:
            x = torch.cat([x, x.flip(-1)])
        side = images.shape[-1]
        self.windows = x.unfold(2, side, 1).unfold(3, side, 1)  # a view: (n, c, 2m+1, 2m+1, side, side)

    def batch(self, index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The images at `index`, randomly cropped, flipped, greyed and cut out per the recipe."""
        size, device = len(index), index.device
        dy = torch.randint(0, 2 * self.margin + 1, (size,), generator=generator, device=device)
        dx = torch.randint(0, 2 * self.margin + 1, (size,), generator=generator, device=device)
        if self.recipe.flip:
            index = index + self.n * (torch.rand(size, generator=generator, device=device) < 0.5)
        x = self.windows[index, :, dy, dx]
        if self.recipe.grayscale:
            x = random_grayscale(x, self.recipe.grayscale, generator, self.description)
        if self.recipe.cutout:
            x = random_cutout(x, self.recipe.cutout, generator)
        return x
