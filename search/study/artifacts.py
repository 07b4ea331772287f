"""The artifact store of a study (kept checkpoints, report plots): a folder, or object storage
through Optuna's own stores, `s3://bucket/prefix` (Boto3ArtifactStore, tested against a real
S3-compatible server) or `gs://bucket/prefix` (GCSArtifactStore, not tested: no GCS server here).

Credentials come from boto3's (or Google's) usual environment and config files, never from a
flag or the URL, and every message that could hold one is masked (`masked`). With object
storage the epoch checkpoints of running trials go through the store too (EpochCheckpoints), so
that a trial retried on another machine resumes where its first run stopped.
"""

from __future__ import annotations

import os
import re
import shutil
import urllib.parse
from collections.abc import Callable
from contextlib import closing, suppress
from pathlib import Path
from typing import BinaryIO

import optuna
from optuna.artifacts.exceptions import ArtifactNotFound

from .layout import OBJECT_SCHEMES, is_object_store, writable_folder
from .storage import StudyError

# What the S3 client may spend on one request before the trial is failed: a store that is down
# is said within seconds, not after botocore's default minutes of retries.
S3_CONFIG = {"connect_timeout": 5, "read_timeout": 60, "retries": {"max_attempts": 3, "mode": "standard"}}
SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID")
SIGNED_QUERY = re.compile(r"(?i)(X-Amz-(?:Signature|Credential|Security-Token)|Signature|AWSAccessKeyId)=[^&\s'\"]+")
USERINFO = re.compile(r"(://)[^/@\s]+@")


class StoreUnreachable(StudyError):
    """The object store failed a read or write (down, unreachable, access refused)."""


def masked(text: str) -> str:
    """`text` with whatever could be a secret replaced by ***: the user part of a URL, signed
    query parameters, and the values of the credential variables boto3 reads."""
    text = SIGNED_QUERY.sub(r"\1=***", USERINFO.sub(r"\1***@", text))
    for name in SECRET_ENV:
        if len(value := os.environ.get(name, "")) >= 4:
            text = text.replace(value, "***")
    return text


def open_artifact_store(location: str | Path, create: bool = True):
    """The study's artifact store at `location` (the command line's, never one the database names).
    A folder is made if `create`; a bucket is checked once, so that a missing bucket, wrong
    credentials or a server that is down are said now in one line."""
    location = str(location)
    if not is_object_store(location):
        folder = writable_folder(Path(location), "artifact store")
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        return optuna.artifacts.FileSystemArtifactStore(location)
    parts = urllib.parse.urlsplit(location)
    if parts.scheme not in OBJECT_SCHEMES:
        kinds = " or ".join(f"{scheme}://bucket/prefix" for scheme in OBJECT_SCHEMES)
        raise StudyError(f"artifact store {masked(location)!r}: a folder, or {kinds}")
    if "@" in parts.netloc or parts.query or parts.fragment:
        raise StudyError(f"artifact store {masked(location)!r}: credentials go in the environment or boto3's config "
                         "files (AWS_ACCESS_KEY_ID, AWS_PROFILE, ...), never in the URL; give s3://bucket/prefix")
    if not re.fullmatch(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]", parts.netloc):
        raise StudyError(f"artifact store {location!r}: {parts.netloc!r} is not a bucket name "
                         "(3 to 63 lowercase letters, digits, dots and hyphens)")
    prefix = parts.path.strip("/")
    store = PrefixedStore(_bucket_store(parts.scheme, parts.netloc), prefix + "/" if prefix else "", location)
    store.check()
    return store


def _bucket_store(scheme: str, bucket: str):
    try:
        if scheme == "gs":
            return optuna.artifacts.GCSArtifactStore(bucket)
        import boto3
        from botocore.config import Config

        return optuna.artifacts.Boto3ArtifactStore(bucket, boto3.client("s3", config=Config(**S3_CONFIG)))
    except ImportError:
        raise StudyError(f"artifact store {scheme}://{bucket}: its client library is not installed; "
                         f"pip install 'resnet-search[{'gcs' if scheme == 'gs' else 's3'}]'") from None
    except Exception as e:  # noqa: BLE001 - a profile that is not there, credentials that cannot be read
        raise StudyError(f"artifact store {scheme}://{bucket} cannot be used: {_detail(e)}") from None


class PrefixedStore:
    """An object store of Optuna's with every key under `prefix`. Optuna's stores write an
    artifact at the bucket's top level under its id; a prefix lets studies share a bucket. Every
    failure but a missing key becomes StoreUnreachable, masked, so no caller sees a client's
    exception or a secret."""

    def __init__(self, store, prefix: str, location: str):
        self.store, self.prefix, self.location = store, prefix, location

    def open_reader(self, artifact_id: str) -> BinaryIO:
        return self._call("read", self.store.open_reader, artifact_id)

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        self._call("write", self.store.write, artifact_id, content_body)

    def remove(self, artifact_id: str) -> None:
        self._call("remove", self.store.remove, artifact_id)

    def download(self, artifact_id: str, path: Path) -> None:
        """The object into `path`, whole: a connection dropped mid-read is StoreUnreachable too."""
        def copy(key: str) -> None:
            with closing(self.store.open_reader(key)) as reader, open(path, "wb") as f:
                shutil.copyfileobj(reader, f)

        self._call("read", copy, artifact_id)

    def check(self) -> None:
        """One request that needs the bucket and the credentials (a missing key reads as
        ArtifactNotFound in Optuna's stores, and so does a missing bucket)."""
        try:
            if isinstance(self.store, optuna.artifacts.Boto3ArtifactStore):
                self.store.client.head_bucket(Bucket=self.store.bucket)
            else:
                self.store.bucket_obj.reload()
        except Exception as e:  # noqa: BLE001
            raise StoreUnreachable(f"artifact store {self.location} cannot be used: {_detail(e)}") from None

    def _call(self, what: str, op, artifact_id: str, *args):
        try:
            return op(self.prefix + artifact_id, *args)
        except ArtifactNotFound:
            raise
        except Exception as e:  # noqa: BLE001 - botocore's and google's errors share no base class
            raise StoreUnreachable(f"artifact store {self.location}: cannot {what} {artifact_id}: {_detail(e)}") from None


def _detail(e: Exception) -> str:
    """The first line of an error, masked before it is cut (a secret cut short would not match)."""
    text = masked(str(e)).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


class EpochCheckpoints:
    """A running trial's epoch checkpoints (the engine's best.pt and last.pt) mirrored in object
    storage under the key of its local folder, checkpoints/STUDY/trial-N (N the trial's first
    run): pushed after each epoch in the order the engine writes them, pulled before a run when
    the store holds more epochs of this very run than the local folder. Nothing to do for a folder
    store, whose checkpoints/ sits beside it (on a shared disk, if workers share one)."""

    FILES = ("best.pt", "last.pt")  # as the engine writes them: a last.pt is never newer than its best.pt

    def __init__(self, store, checkpoints: Path):
        self.store = store if isinstance(store, PrefixedStore) else None
        self.checkpoints = checkpoints  # the study's local checkpoint folder, whose last two parts make the key
        self.pushed: dict[Path, int] = {}  # mtime of each file as last pushed

    def key(self, folder: Path, name: str) -> str:
        return f"checkpoints/{self.checkpoints.name}/{folder.name}/{name}"

    def pull(self, folder: Path, epochs_in: Callable[[Path], int]) -> None:
        """Take the store's copy, both files as it holds them, where it has more epochs of this
        very run than `folder` does (epochs_in(a folder): the epochs its checkpoint holds of the run)."""
        if self.store is None:
            return
        from ..engine.data import UnsafeFile  # here: the report and the dashboard open stores without torch

        incoming = folder / ".from-store"
        shutil.rmtree(incoming, ignore_errors=True)
        incoming.mkdir(parents=True)
        try:
            for name in self.FILES:
                try:
                    self.store.download(self.key(folder, name), incoming / name)
                except ArtifactNotFound:
                    (incoming / name).unlink(missing_ok=True)
            try:
                newer = epochs_in(incoming) > epochs_in(folder)
            except UnsafeFile:
                raise UnsafeFile(f"checkpoint {self.store.location}/{self.key(folder, 'last.pt')} (or its best.pt) "
                                 "names code to run, not only tensors: refused unread; delete it") from None
            if newer:
                for name in self.FILES:
                    (folder / name).unlink(missing_ok=True)
                    if (incoming / name).exists():
                        (incoming / name).replace(folder / name)
        finally:
            shutil.rmtree(incoming, ignore_errors=True)

    def push(self, folder: Path) -> None:
        """best.pt when it changed, then last.pt, into the store."""
        if self.store is None:
            return
        for name in self.FILES:
            path = folder / name
            if path.exists() and self.pushed.get(path) != (stamp := path.stat().st_mtime_ns):
                with open(path, "rb") as f:
                    self.store.write(self.key(folder, name), f)
                self.pushed[path] = stamp

    def remove(self, folder: Path) -> None:
        """The run's copies, once it was kept or will never resume. A copy the store failed to
        remove is left: it is never resumed but by a later run of the same trial."""
        if self.store is None:
            return
        for name in self.FILES:
            self.pushed.pop(folder / name, None)
            with suppress(StoreUnreachable):
                self.store.remove(self.key(folder, name))
