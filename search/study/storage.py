"""Optuna storages as the search uses them: heartbeats that survive a brief outage, bounded
reconnection, the schema-creation race of workers starting together, and URLs without passwords."""

from __future__ import annotations

import contextlib
import datetime
import os
import sqlite3
import time
import warnings
from pathlib import Path

import optuna
import sqlalchemy

from resnet_space.errors import UserError

from ..private import trial_id
from .layout import FINAL_STAGE_SUFFIX, HEARTBEAT_S, invoked_as, sqlite_file, writable_folder

# Heartbeats and the stale-trial retry are marked experimental.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

STORAGE_ERRORS = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError,
                  optuna.exceptions.StorageInternalError)


WORKER_LOST = "worker lost: "  # how the reason for a trial failed by a stale heartbeat begins


class StudyError(UserError):
    """A study or storage problem a user can fix; one line."""


class RDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage whose heartbeats outlive a brief outage. Optuna's heartbeat thread
    dies on its first failed write, after which a live trial would look dead to every worker."""

    max_retry = 2  # a dead worker's trial is run again at most this many times
    _writing_reason_of = None  # the one finished trial whose fail reason is being written

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            super().record_heartbeat(trial_id)
        except STORAGE_ERRORS:
            pass  # the next beat tries again; the grace period spans three of them

    def get_heartbeat_stale_trial_callback(self):
        return self._failed_stale_trial

    def _failed_stale_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Optuna failed a trial whose worker stopped beating: queue its retry, then record why,
        which Optuna does not (the retry is queued first, so it does not inherit the reason)."""
        retried = not self.retries_spent(trial)  # before: the callback appends to its history
        optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=self.max_retry)(study, trial)
        self.write_fail_reason(trial_id(trial), stale_reason(self.grace_period, retried, self.max_retry))

    def retries_spent(self, trial: optuna.trial.FrozenTrial) -> bool:
        """Whether failing this trial for a stale heartbeat queues no retry of it."""
        return len(trial.system_attrs.get("retry_history", [])) >= self.max_retry

    def write_fail_reason(self, trial_id: int, reason: str) -> None:
        """Why a finished trial failed. Optuna refuses attrs on a finished trial; this one write,
        to this one trial, is let through."""
        self._writing_reason_of = trial_id
        try:
            self.set_trial_user_attr(trial_id, "fail_reason", reason)
        finally:
            self._writing_reason_of = None

    def check_trial_is_updatable(self, trial_id: int, trial_state) -> None:
        if trial_id != self._writing_reason_of:
            super().check_trial_is_updatable(trial_id, trial_state)


def retries(trial: optuna.trial.FrozenTrial, number: int) -> bool:
    """Whether `trial` is Optuna's stale-trial retry of trial `number`. Its failed_trial names the
    first run of a chain of retries; its retry history ends with the run it retries."""
    return trial.system_attrs.get("retry_history", [])[-1:] == [number]


def stale_reason(grace_s: int, retried: bool, max_retry: int) -> str:
    """Why a trial whose worker went silent failed, as every storage records it."""
    return (f"{WORKER_LOST}no heartbeat for {grace_s} s (killed, or cut off from the storage); "
            + ("retried from its checkpoint" if retried else
               f"not retried: its run was retried {max_retry} times already"))


def check_storage_url(url: str, create: bool = False, write: bool = True) -> None:
    """Refuse, without opening anything, a URL that is no Optuna RDB URL, and a SQLite file that
    is missing (unless `create`), a folder, not Optuna's, or that cannot be written (`write`)."""
    path = sqlite_file(url)
    if path is not None:
        if path.is_dir():
            raise StudyError(f"storage {url}: {path} is a directory, not a database file")
        if path.exists() and not path.is_file():
            raise StudyError(f"storage {url}: {path} is not a regular file")
        if not path.exists():
            if not create:
                raise StudyError(f"storage {url}: no database file {path}; run `{invoked_as()} run` first")
            writable_folder(path.parent, "database folder")
            return
        tables = _tables(path)
        if tables is None or (tables and not {"studies", "version_info"} <= tables) or (not tables and not create):
            raise StudyError(f"storage {url}: {path} is not an Optuna database"
                             + (" (it holds other tables)" if tables else "") + "; check --storage")
        if write and not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK | os.X_OK)):
            raise StudyError(f"storage {url}: database file {path} cannot be written (permissions, or a read-only "
                             "file system)")
    elif not url.startswith(("sqlite:///", "postgresql", "mysql", "grpc://")):
        raise StudyError(f"storage {url!r} is not an Optuna RDB URL (sqlite:///FILE or postgresql://USER@HOST/DB) "
                         "nor a storage proxy (grpc://HOST:PORT)")


def _tables(path: Path) -> set[str] | None:
    """The tables of a SQLite file, read without writing a byte to it; None if it is no SQLite file."""
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as con:
            return {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error:
        return None


def open_storage(url: str, heartbeat_s: int = HEARTBEAT_S, retry_s: float = 0,
                 create: bool = False, write: bool = True) -> optuna.storages.BaseStorage:
    """An RDB storage with heartbeats, so a trial whose worker died is failed and retried.
    An unreachable server is retried with backoff for retry_s seconds before giving up. Only
    with `create` is a missing SQLite file made (with its folder), or Optuna's tables added to
    an empty one: reading never leaves one. `write`: refuse a SQLite file that cannot be written."""
    check_storage_url(url, create, write)
    if url.startswith("grpc://"):  # a worker behind `serve-storage`
        from .proxy import ProxiedStorage

        return ProxiedStorage(url, heartbeat_s, wait_s=max(retry_s, 10))
    if (path := sqlite_file(url)) is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    deadline, wait, schema_races = time.monotonic() + retry_s, 1.0, 0
    while True:
        try:
            return RDBStorage(
                url, engine_kwargs={"pool_pre_ping": True}, heartbeat_interval=heartbeat_s,
                grace_period=3 * heartbeat_s,  # the stale trial's retry: RDBStorage._failed_stale_trial
            )
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as e:
            # Workers starting together on a fresh database race to create Optuna's tables.
            schema_races += 1
            if schema_races > 5:
                raise StudyError(f"cannot open storage {redact(url)}: {str(e).splitlines()[0][:200]}") from None
            time.sleep(0.2 * schema_races)
        except STORAGE_ERRORS as e:
            if time.monotonic() + wait > deadline:
                raise StudyError(f"cannot reach storage {redact(url)} (tried for {retry_s:g} s): "
                                 f"{str(e).splitlines()[0][:200]}") from None
            time.sleep(wait)  # backoff: 1, 2, 4, ... 15 s
            wait = min(2 * wait, 15.0)
        except ImportError:
            raise StudyError(f"no database driver installed for {redact(url)} "
                             "(for PostgreSQL: pip install 'resnet-search[postgres]')") from None
        except Exception as e:  # noqa: BLE001 - SQLAlchemy and drivers raise many kinds
            raise StudyError(f"cannot open storage {redact(url)}: {str(e).splitlines()[0][:200]}") from None


def storage_outage(error: BaseException) -> BaseException | None:
    """The storage error behind `error`, if the storage being unreachable caused it. Optuna can
    surface an outage as another error raised while handling it, so the chain is walked."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, STORAGE_ERRORS) or _proxy_unreachable(error):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _proxy_unreachable(error: BaseException) -> bool:
    """A call to the storage proxy (grpc://) that found no server: grpc's UNAVAILABLE."""
    code = getattr(error, "code", None)
    return (type(error).__module__.startswith("grpc") and callable(code)
            and getattr(code(), "name", "") == "UNAVAILABLE")


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001
        return url


def study_names(storage) -> list[str]:
    return [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]


def load_study(storage, name: str | None, log=None) -> optuna.Study:
    """The study called `name`; with no name, the storage's only search, else the one whose trials
    ran last, said through `log`, so the commands after a `run` need no --study."""
    if name is None:
        searches = [n for n in study_names(storage) if not n.endswith(FINAL_STAGE_SUFFIX)]
        if not searches:
            raise StudyError(f"this storage holds no study yet; run `{invoked_as()} run` first")
        name = searches[0] if len(searches) == 1 else max(searches, key=lambda n: _last_activity(storage, n))
        if log is not None:
            log(f"study {name!r}: " + ("the storage's only study" if len(searches) == 1 else
                f"the last one run of {len(searches)} ({', '.join(searches)})") + "; --study chooses another")
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        known = study_names(storage)
        raise StudyError(f"no study named {name!r} in this storage"
                         + (f" (it has: {', '.join(known)})" if known else " (it has none)")) from None


def _last_activity(storage, name: str) -> datetime.datetime:
    study_id = storage.get_study_id_from_name(name)
    times = [t.datetime_complete or t.datetime_start for t in storage.get_all_trials(study_id, deepcopy=False)]
    return max((t for t in times if t is not None), default=datetime.datetime.min)
