"""Where things live: the defaults, the shipped study files, and every output folder of a study
(and `plural`, for messages).

Light on purpose: parsing flags imports this and neither torch nor optuna.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import sys
import urllib.parse
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from resnet_space.errors import UserError

DEFAULT_STUDY = "resnet-search"
DEFAULT_STORAGE = "sqlite:///studies/resnet-search.db"
STORAGE_ENV = "RESNET_SEARCH_STORAGE"  # a storage URL kept out of the process list
DEFAULT_ARTIFACTS = "studies/artifacts"
OBJECT_SCHEMES = ("s3", "gs")  # artifact stores in object storage (search/study/artifacts.py)
LOCAL_OUTPUTS = "studies"  # with object storage: the local folder of checkpoints in progress, reports, retrains
DEFAULT_SPACE = "default"
HEARTBEAT_S = 30  # a worker whose heartbeat is silent for 3 of these periods is dead: its trial is retried
DEFAULT_TRIALS = 100
DEFAULT_VAL_SIZE = 5000  # images held out of train: about +/-0.7 points of noise at 50% accuracy
DEFAULT_STORAGE_RETRY_S = 60.0
DEFAULT_FINALISTS = 3  # distinct specs the final stage trains again (the baseline besides)
FINAL_STAGE_SUFFIX = "--final"  # the final stage's study is the search's name with this after it


def shipped_spaces() -> list[str]:
    return sorted(p.name.removesuffix(".toml") for p in resources.files("resnet_space.studies").iterdir()
                  if p.name.endswith(".toml"))


def resolve_space(name: str) -> Path:
    """A study file's path, or the name of one shipped with the package ('default', 'paper',
    'cpu-small'). A path that exists, as written, wins over a shipped name."""
    path = Path(name)
    if path.exists() or path.parent != Path("."):
        return path
    shipped = resources.files("resnet_space.studies") / (name if name.endswith(".toml") else f"{name}.toml")
    return Path(str(shipped)) if shipped.is_file() else path


def study_name(text: str) -> str:
    """`text` if it can name a study. The study's folders are named after it, so it is a plain
    name: never a path (a / or \\ would put its report and checkpoints outside their folders)."""
    if (not text.strip() or len(text) > 512 or not text.isprintable() or "/" in text or "\\" in text
            or text in (".", "..")):
        raise UserError(f"{text!r} is not a study name (1 to 512 printable characters, no / or \\, not . or ..)")
    return text


def writable_folder(path: Path, what: str) -> Path:
    """`path` if it is a folder or can be made one, checked before anything is written: refused
    where a file (or a broken link) stands at it or above it, or where the folder that would hold
    it cannot be written (permissions, a read-only file system)."""
    for p in (path, *path.parents):
        if p.is_dir():
            if not os.access(p, os.W_OK | os.X_OK):
                raise UserError(f"{what} {path} cannot be written" + ("" if p == path else f" ({p} cannot be)"))
            return path
        if p.exists() or p.is_symlink():
            raise UserError(f"{what} {path} is not a folder" if p == path else f"{what} {path}: {p} is not a folder")
    return path


def is_object_store(location: str | Path) -> bool:
    return "://" in str(location)


def sqlite_file(url: str) -> Path | None:
    """The database file a sqlite:/// URL names; None for another URL or an in-memory database."""
    if not url.startswith("sqlite:///"):
        return None
    path = url.removeprefix("sqlite:///").split("?")[0]
    return None if path in ("", ":memory:") else Path(path)


def storage_tag(storage: str) -> str:
    """'' for the default storage; for another, its database's name and a digest of where it is
    (never its password), so that a study of the same name in two storages gets two folders."""
    parts = urllib.parse.urlsplit(storage)
    if (path := sqlite_file(storage)) is not None:
        path = path.resolve()
        if path == sqlite_file(DEFAULT_STORAGE).resolve():
            return ""
        name, where = path.stem, str(path)
    else:
        name = parts.path.strip("/").rsplit("/", 1)[-1] or parts.hostname or parts.scheme
        where = f"{parts.scheme}://{parts.hostname}:{parts.port}{parts.path}"
    return f"{name}-{hashlib.sha1(where.encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class Outputs:
    """A study's local folders: checkpoints/STUDY/ (per-epoch, while trials run), reports/STUDY/
    and retrain/STUDY/ (each STUDY@TAG for a storage other than the default: see storage_tag). They sit
    beside an artifact store that is a folder (artifacts/: kept checkpoints and plots, shared by
    the studies of one storage); with object storage, in LOCAL_OUTPUTS of the working folder,
    never a folder made from the store's URL."""

    artifacts: str | Path  # a folder, or s3://bucket/prefix
    study: str
    storage: str = DEFAULT_STORAGE

    def __post_init__(self):
        study_name(self.study)
        writable_folder(self.checkpoints, "checkpoint folder")
        writable_folder(self.reports, "report folder")

    @property
    def local(self) -> Path:
        return Path(LOCAL_OUTPUTS) if is_object_store(self.artifacts) else Path(self.artifacts).parent

    @property
    def artifacts_at(self) -> str:
        """Where the store is, as the study records it: an absolute folder, or the URL."""
        return str(self.artifacts) if is_object_store(self.artifacts) else str(Path(self.artifacts).resolve())

    @property
    def checkpoints(self) -> Path:
        return self.local / "checkpoints" / self._named

    @property
    def reports(self) -> Path:
        return self.local / "reports" / self._named

    @property
    def retrain(self) -> Path:
        return self.local / "retrain" / self._named

    @property
    def _named(self) -> str:
        tag = storage_tag(self.storage)
        return f"{self.study}@{tag}" if tag else self.study


def invoked_as() -> str:
    """The command as the user typed it (.venv/bin/resnet-search, say), so a suggestion runs as printed."""
    typed = Path(sys.argv[0])
    return shlex.quote(str(typed)) if typed.name == "resnet-search" else "resnet-search"


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"
