"""Where the engine reads and writes on disk: the environment variables that name the data and
the decoded-image cache, the named data sets torchvision reads (NAMED: the one place a new one is
added), and `save_atomic`, how every file it writes is written.

Light on purpose: the command line reads these names while parsing flags, before torch loads.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

DATA_ENV = "RESNET_SEARCH_DATA"
CACHE_ENV = "RESNET_SEARCH_CACHE"


@dataclass(frozen=True)
class Named:
    """A data set torchvision reads and downloads: its class, and the folder torchvision looks
    for in the root (how a root of that layout is recognised)."""

    title: str
    dataset: str  # the class's name in torchvision.datasets
    marker: str
    train_images: int  # in its training split: what an estimate counts before the data is read


NAMED = {
    "cifar10": Named("CIFAR-10", "CIFAR10", "cifar-10-batches-py", 50_000),
    "cifar100": Named("CIFAR-100", "CIFAR100", "cifar-100-python", 50_000),
    "svhn": Named("SVHN", "SVHN", "train_32x32.mat", 73_257),
    "fashion-mnist": Named("Fashion-MNIST", "FashionMNIST", "FashionMNIST", 60_000),
}


def named_key(title: str | None) -> str | None:
    """The NAMED key of a data set recorded by its title ("CIFAR-10" -> "cifar10"), else None."""
    return next((key for key, named in NAMED.items() if named.title == title), None)


def cache_root() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "resnet-search"


def save_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """write(a temporary path beside `path`), then rename it over `path`: a crash mid-write never
    leaves a torn file, and two processes writing at once never interleave. Temporary files of
    writers that died (SIGKILL) are removed first."""
    for stale in path.parent.glob(f"{path.name}.tmp*"):
        pid = stale.name.removeprefix(f"{path.name}.tmp")
        if pid.isdigit() and not _alive(int(pid)):
            stale.unlink(missing_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True
