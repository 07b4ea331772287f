"""Many workers through one database connection: Optuna's gRPC storage proxy in front of the
study's database (`resnet-search serve-storage`), reached by workers as grpc://HOST:PORT.

Optuna's proxy carries no heartbeats, and without them a killed worker's trial stays RUNNING for
good. Workers behind it record theirs as a trial system attr (seconds on the worker's clock), and
fail and retry a trial whose worker went silent as storage.RDBStorage does on a database: the
same grace period (3 beats), the same retries from the checkpoint, the same reason recorded."""

from __future__ import annotations

import time
import urllib.parse

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from ..private import heartbeat_base, trial_id
from .storage import RDBStorage, StudyError, open_storage, redact, retries, stale_reason

try:
    from optuna.storages import GrpcStorageProxy
    import grpc  # noqa: F401 - Optuna imports it only once a proxy is made
except ImportError:
    raise StudyError("a storage proxy (serve-storage, grpc://) needs grpcio: pip install 'resnet-search[proxy]'") \
        from None

SCHEME = "grpc://"
HEARTBEAT = "heartbeat"  # the system attr a worker behind the proxy beats on


def address(url: str) -> tuple[str, int]:
    """(host, port) of a grpc://HOST:PORT URL, refused in one line if it names none."""
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "grpc" or not parts.hostname or port is None or parts.path not in ("", "/"):
        raise StudyError(f"storage {url!r}: a storage proxy is grpc://HOST:PORT (as serve-storage prints it)")
    return parts.hostname, port


def serve(url: str, host: str, port: int, log) -> None:
    """Run Optuna's gRPC proxy over the database at `url` until stopped (Ctrl-C, SIGTERM). Its
    workers beat through the proxy (ProxiedStorage), not on the database."""
    storage = open_storage(url, create=True)
    log(f"serving storage {redact(url)} to workers at {SCHEME}{host}:{port} (run them with --storage "
        f"{SCHEME}{host}:{port}); Ctrl-C stops it")
    optuna.storages.run_grpc_proxy_server(storage, host=host, port=port)


class ProxiedStorage(GrpcStorageProxy, heartbeat_base()):
    """A worker's storage behind `serve-storage`, with the heartbeats the proxy does not carry."""

    max_retry = RDBStorage.max_retry
    retries_spent = RDBStorage.retries_spent

    def __init__(self, url: str, heartbeat_s: int, wait_s: float = 10):
        host, port = address(url)
        super().__init__(host=host, port=port)
        self.heartbeat_interval, self.grace_period = heartbeat_s, 3 * heartbeat_s
        try:
            self.wait_server_ready(timeout=wait_s)
        except ConnectionError:
            raise StudyError(f"cannot reach storage proxy {url} (waited {wait_s:g} s): is `serve-storage` running "
                             "there?") from None

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self.set_trial_system_attr(trial_id, HEARTBEAT, time.time())
        except Exception:  # noqa: BLE001 - a beat lost to a hiccup: the next one tries again, within the grace
            pass

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        """The running trials whose worker has been silent past the grace period, each given its
        reason while it can still take one (the proxy's database refuses attrs on a failed trial)."""
        now, stale = time.time(), []
        for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            # A retry inherits its failed run's last beat: it counts from its own start till it beats.
            started = trial.datetime_start.timestamp() if trial.datetime_start else now
            if now - max(trial.system_attrs.get(HEARTBEAT, started), started) > self.grace_period:
                try:
                    self.set_trial_user_attr(trial_id(trial), "fail_reason", stale_reason(
                        self.grace_period, retried=not self.retries_spent(trial), max_retry=self.max_retry))
                except optuna.exceptions.UpdateFinishedTrialError:
                    continue  # another worker's check failed it first (workers starting together all look)
                stale.append(trial_id(trial))
        return stale

    def get_heartbeat_interval(self) -> int:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self):
        return self._retry

    def _retry(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Queue the retry as RDBStorage does; the retry is queued with the failed trial's user
        attrs, its reason among them, which it does not share."""
        RetryHeartbeatStaleTrialCallback(max_retry=self.max_retry)(study, trial)
        for waiting in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            if retries(waiting, trial.number) and waiting.user_attrs.get("fail_reason"):
                self.set_trial_user_attr(trial_id(waiting), "fail_reason", "")

    def write_fail_reason(self, trial_id: int, reason: str) -> None:
        """Why a trial failed. The proxy's database refuses attrs on a finished trial: there the
        reason written as it failed stays."""
        try:
            self.set_trial_user_attr(trial_id, "fail_reason", reason)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass
