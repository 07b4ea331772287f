"""The search on Optuna: storage, study creation with the seeded baseline, and the objective.

One trial = sample a spec (width last, so it nearly always fits), reject it by its exact count
if it is at or above the budget (recorded as pruned, zero training), else train it, reporting
validation accuracy each epoch to the pruner, and keep its best checkpoint as an artifact.
"""

from __future__ import annotations

import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
import sqlalchemy
import torch
from optuna.artifacts import FileSystemArtifactStore, upload_artifact
from optuna.trial import TrialState

from resnet_space import MODEL_1, TABLE_1, count
from resnet_space.space import StudyFile

from .data import Cifar10
from .train import Diverged, resumable_state, train

# Heartbeats, grouped multivariate TPE and the stale-trial retry are marked experimental.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

HEARTBEAT_S = 30  # a worker silent for 3 heartbeats is dead: its trial is failed and retried
STORAGE_ERRORS = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError,
                  optuna.exceptions.StorageInternalError)


class StudyError(Exception):
    """A study or storage problem a user can fix; one line."""


class RDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage whose heartbeats outlive a brief outage. Optuna's heartbeat thread
    dies on its first failed write, after which a live trial would look dead to every worker."""

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            super().record_heartbeat(trial_id)
        except STORAGE_ERRORS:
            pass  # the next beat tries again; the grace period spans three of them


def open_storage(url: str, heartbeat_s: int = HEARTBEAT_S, retry_s: float = 0) -> optuna.storages.BaseStorage:
    """An RDB storage with heartbeats, so a trial whose worker died is failed and retried.
    An unreachable server is retried with backoff for retry_s seconds before giving up."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if str(path) not in ("", ":memory:"):
            if path.is_dir():
                raise StudyError(f"storage {url}: {path} is a directory, not a database file")
            path.parent.mkdir(parents=True, exist_ok=True)
    elif not url.startswith(("postgresql", "mysql")):
        raise StudyError(f"storage {url!r} is not an Optuna RDB URL (sqlite:///FILE or postgresql://USER@HOST/DB)")
    deadline, wait, schema_races = time.monotonic() + retry_s, 1.0, 0
    while True:
        try:
            return RDBStorage(
                url, engine_kwargs={"pool_pre_ping": True}, heartbeat_interval=heartbeat_s,
                grace_period=3 * heartbeat_s,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2),
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
        if isinstance(error, STORAGE_ERRORS):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001
        return url


def study_names(storage) -> list[str]:
    return [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]


def load_study(storage, name: str) -> optuna.Study:
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        known = study_names(storage)
        raise StudyError(f"no study named {name!r} in this storage"
                         + (f" (it has: {', '.join(known)})" if known else " (it has none)")) from None


def table_1_records() -> list[dict]:
    return [{"model": name, "description": desc, "reported_test_acc": acc, "reported_params": params,
             "params": count(spec).params if spec else None, "summary": spec.summary() if spec else None}
            for name, desc, acc, params, spec in TABLE_1]


@dataclass
class SearchSettings:
    budget: int
    space: StudyFile
    epochs: int | None  # overrides the recipe's
    device: str
    seed: int
    checkpoints: Path
    artifacts: Path
    baseline: bool = True


def create_or_load(storage, name: str, settings: SearchSettings, sampler, pruner) -> tuple[optuna.Study, bool]:
    """Create the study, or load it to resume. Only the process that creates it enqueues the
    baseline, and creation is atomic in the database, so several workers enqueue it once."""
    try:
        study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner,
                                    direction="maximize", load_if_exists=False)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
        recorded = study.user_attrs.get("budget")
        if recorded is not None and recorded != settings.budget:
            raise StudyError(f"study {name!r} searches under a budget of {recorded:,}, not {settings.budget:,}; "
                             "use that budget to resume it or a new --study name") from None
        return study, False
    for key, value in {
        "budget": settings.budget,
        "space_file": str(settings.space.path),
        "space": settings.space.space,
        "recipe_space": {k: list(v) if isinstance(v, tuple) else v for k, v in settings.space.recipe.items()},
        "artifact_dir": str(settings.artifacts.resolve()),
        "split_seed": settings.seed,
        "table_1": table_1_records(),
    }.items():
        study.set_user_attr(key, value)
    if settings.baseline:
        study.enqueue_trial(settings.space.center_recipe()[1], user_attrs={"baseline": "Model 1"})
    return study, True


class SurplusTrial(Exception):
    """Several workers asked for trials at once and this one is past the study's total."""


class Objective:
    def __init__(self, settings: SearchSettings, data: Cifar10, progress=False, log=None,
                 max_trials: int | None = None):
        self.settings = settings
        self.data = data
        self.progress = progress
        self.log = log or (lambda message: None)
        self.max_trials = max_trials
        settings.artifacts.mkdir(parents=True, exist_ok=True)
        self.store = FileSystemArtifactStore(str(settings.artifacts))

    def __call__(self, trial: optuna.Trial) -> float:
        try:
            return self._run(trial)
        except KeyboardInterrupt:
            trial.set_user_attr("fail_reason", "interrupted (Ctrl-C); its checkpoint is kept to resume from")
            raise
        except torch.cuda.OutOfMemoryError as e:
            trial.set_user_attr("fail_reason", f"CUDA out of memory: {str(e).splitlines()[0][:200]}")
            raise
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()  # the next trial starts with the memory this one held

    def _run(self, trial: optuna.Trial) -> float:
        s = self.settings
        self._refuse_surplus(trial)
        baseline = trial.user_attrs.get("baseline") == "Model 1"
        spec = MODEL_1 if baseline else s.space.sample_spec(trial, s.budget)
        recipe = s.space.sample_recipe(trial, s.epochs)
        counts = count(spec)
        # A retried (worker died) or re-queued (Ctrl-C) trial inherits its first run's checkpoint dir.
        first_run = trial.user_attrs.get("first_trial", trial.number)
        checkpoint_dir = Path(trial.user_attrs.get("checkpoint_dir") or s.checkpoints / f"trial-{trial.number}")
        for key, value in {"spec": spec.to_dict(), "summary": spec.summary(), "params": counts.params,
                           "macs": counts.macs, "seed": s.seed, "device": s.device, "recipe": recipe.to_dict(),
                           "dataset": self.data.name, "first_trial": first_run,
                           "checkpoint_dir": str(checkpoint_dir.resolve())}.items():
            trial.set_user_attr(key, value)
        if counts.params >= s.budget:
            reason = f"over budget: {counts.params:,} params >= {s.budget:,}"
            trial.set_user_attr("over_budget", True)
            trial.set_user_attr("prune_reason", reason)
            raise optuna.TrialPruned(reason)
        twin = self._running_twin(trial, spec)
        if twin is not None:
            trial.set_user_attr("prune_reason", f"duplicate: trial {twin} is training the same spec")
            raise optuna.TrialPruned(f"same spec as running trial {twin}")

        curve, seconds = [], []
        resumed = resumable_state(checkpoint_dir, spec, recipe, s.seed)
        if resumed is not None:  # replay what the checkpoint holds, so the curve is whole
            for e in resumed["history"]:
                curve.append(e["val_acc"])
                seconds.append(e["seconds"])
                trial.report(e["val_acc"], e["epoch"])
            trial.set_user_attr("resumed_from_trial", first_run)
            trial.set_user_attr("resumed_from_epoch", len(curve))

        def report(epoch, val_acc, loss, secs):
            curve.append(val_acc)
            seconds.append(secs)
            trial.set_user_attr("val_acc_per_epoch", curve)
            trial.set_user_attr("seconds_per_epoch", seconds)
            trial.set_user_attr("train_loss_last", loss)
            trial.report(val_acc, epoch)
            if epoch < recipe.epochs and trial.should_prune():  # after the last epoch there is nothing to save
                trial.set_user_attr("prune_reason", f"pruned by the pruner after epoch {epoch} at {val_acc:.2%}")
                raise optuna.TrialPruned(f"epoch {epoch}: {val_acc:.2%}")

        self.log(f"trial {trial.number}: {spec.summary()} ({counts.params:,} params)"
                 + (" [seeded baseline: the report's Model 1]" if baseline else "")
                 + (f" [resuming trial {first_run} after epoch {len(curve)}]" if resumed else ""))
        try:
            result = train(spec, self.data, recipe, device=s.device, seed=s.seed, on_epoch=report,
                           checkpoint_dir=checkpoint_dir, progress=self.progress)
        except Diverged as e:
            trial.set_user_attr("prune_reason", f"diverged: {e}")
            shutil.rmtree(checkpoint_dir, ignore_errors=True)
            raise optuna.TrialPruned(str(e)) from None
        except optuna.TrialPruned:
            shutil.rmtree(checkpoint_dir, ignore_errors=True)  # a pruned trial never resumes
            raise
        trial.set_user_attr("best_epoch", result.best_epoch)
        artifact = upload_artifact(artifact_store=self.store, file_path=str(checkpoint_dir / "best.pt"),
                                   study_or_trial=trial)
        trial.set_user_attr("checkpoint_artifact", artifact)
        shutil.rmtree(checkpoint_dir, ignore_errors=True)  # the artifact store holds what is kept
        return result.best_val_acc

    def _refuse_surplus(self, trial: optuna.Trial) -> None:
        """With several workers, each may start a trial just as the study reaches its total.
        Trials numbered lower go first; one that finds the total already taken steps aside."""
        if self.max_trials is None:
            return
        taken = trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                               TrialState.RUNNING))
        if sum(t.number < trial.number for t in taken) >= self.max_trials:
            trial.set_user_attr("fail_reason", f"surplus: the study already had its {self.max_trials} trials")
            trial.study.stop()
            raise SurplusTrial(f"the study already has its {self.max_trials} trials")

    @staticmethod
    def _running_twin(trial: optuna.Trial, spec) -> int | None:
        """Another running trial on the same spec, if any (constant liar makes it rare). Each
        trial records its spec before it looks, so of two that start together at least the
        later one sees the other; both may step aside, neither trains the spec twice."""
        for t in trial.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.number != trial.number and t.user_attrs.get("spec") == spec.to_dict():
                return t.number
        return None


def requeue_interrupted(study: optuna.Study) -> list[int]:
    """Trials stopped by Ctrl-C go back in the queue once, to resume from their checkpoints."""
    done = set(study.user_attrs.get("requeued", []))
    again = [t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
             if t.user_attrs.get("fail_reason", "").startswith("interrupted") and t.number not in done]
    for t in again:
        attrs = {k: v for k, v in t.user_attrs.items() if k != "fail_reason"}
        study.enqueue_trial(t.params, user_attrs=attrs)
        done.add(t.number)
    if again:
        study.set_user_attr("requeued", sorted(done))
    return [t.number for t in again]


def trial_counts(study: optuna.Study) -> dict:
    trials = study.get_trials(deepcopy=False)
    over = sum(1 for t in trials if t.user_attrs.get("over_budget"))
    return {
        "trials": len(trials),
        "complete": sum(t.state == TrialState.COMPLETE for t in trials),
        "pruned": sum(t.state == TrialState.PRUNED for t in trials) - over,
        "over_budget": over,
        "failed": sum(t.state == TrialState.FAIL for t in trials),
        "running": sum(t.state == TrialState.RUNNING for t in trials),
    }


def best_trials(study: optuna.Study, top: int) -> list[optuna.trial.FrozenTrial]:
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
    return sorted(done, key=lambda t: (-t.value, t.number))[:top]


def cpu_estimate_hours(macs_per_image: int, images: int, epochs: int) -> tuple[float, float]:
    """(hours, measured MAC/s): training costs about 3x the forward MACs (forward + backward)."""
    conv = torch.nn.Conv2d(64, 64, 3, padding=1)
    x = torch.randn(32, 64, 32, 32)
    with torch.no_grad():
        conv(x)
        start = time.perf_counter()
        for _ in range(3):
            conv(x)
    rate = 3 * 32 * 64 * 64 * 9 * 32 * 32 / (time.perf_counter() - start)
    return 3 * macs_per_image * images * epochs / rate / 3600, rate
