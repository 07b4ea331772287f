"""What a trial and a study record: the one reader of their user attrs, and their writer but for
one attr: why a trial already finished failed, which only the storage can write
(storage.RDBStorage.write_fail_reason; faults.py writes it so after an outage).

The search writes through the `write_*` functions; `best`, the export, the report and the live
view read through `TrialRecord.of(trial)` and `StudyRecord.of(study)`, and what shows many numbers
of a study together (the report, `best`) reads it once, as a `Snapshot`. A change to what a trial
records touches this file alone. It imports optuna but neither torch nor the training engine.
"""

from __future__ import annotations

import datetime
import functools
import re
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path

import optuna
from optuna.trial import TrialState

from resnet_space import Budget
from resnet_space.errors import UserError

from ..private import study_storage
from .layout import DEFAULT_VAL_SIZE, FINAL_STAGE_SUFFIX, Outputs

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
ARTIFACT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")  # optuna's uuid4 ids


class RecordError(UserError):
    """A study or trial attribute of the wrong kind or out of range: the database was edited or
    damaged. Nothing read from it is trusted; one line names what is wrong."""


def _conforms(value, hint) -> bool:
    """Whether a JSON value read back from the storage is of the annotated type."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is list:
        return isinstance(value, list) and all(_conforms(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    return isinstance(value, origin or hint)


@functools.cache
def _fields(cls) -> tuple[tuple[str, object], ...]:
    hints = typing.get_type_hints(cls)
    return tuple((f.name, hints[f.name]) for f in fields(cls))


def _checked(cls, attrs: dict, where: str) -> dict:
    """The attrs `cls` reads, each checked against its field's type."""
    known = {}
    for name, hint in _fields(cls):
        value = attrs.get(name)
        if value is None:
            continue
        if not _conforms(value, hint):
            shown = repr(value)
            raise RecordError(f"{where} records {name} = {shown[:60] + '...' if len(shown) > 60 else shown}, "
                              "not of its kind: the database was edited or is damaged")
        known[name] = value
    return known


def _is_iso_time(text: str) -> bool:
    try:
        datetime.datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def _is_description(data: dict) -> bool:
    """A recorded DataDescription.to_dict(): the kinds the export and retrain read."""
    def numbers(v):
        return isinstance(v, list) and all(_conforms(x, float) for x in v)
    return (isinstance(data.get("name"), str) and isinstance(data.get("fingerprint"), str)
            and isinstance(data.get("classes"), list) and all(isinstance(c, str) for c in data["classes"])
            and _conforms(data.get("side"), int) and data.get("channels") in (1, 3)
            and numbers(data.get("mean")) and numbers(data.get("std")))


def _require(ok: bool, where: str, what: str) -> None:
    if not ok:
        raise RecordError(f"{where} records {what}: the database was edited or is damaged")


# ---------------------------------------------------------------- trials


@dataclass
class TrialRecord:
    number: int
    state: str  # TrialState name: COMPLETE, PRUNED, FAIL, RUNNING, WAITING
    value: float | None  # the objective, best validation accuracy (complete trials only)
    spec: dict | None = None
    summary: str = "?"
    params: int | None = None
    macs: int | None = None
    recipe: dict = field(default_factory=dict)
    seed: int | None = None
    device: str = ""
    dataset: str | None = None
    train_images: int | None = None  # what it trained on: all the training images, or --trial-images of them
    baseline: bool = False  # the study's seeded baseline rather than a sampled spec
    baseline_label: str = ""  # "Model 1", or how Model 1 was scaled to the budget
    curve: list[float] = field(default_factory=list)  # validation accuracy per epoch, fractions
    seconds: list[float] = field(default_factory=list)  # seconds per epoch
    losses: list[float] = field(default_factory=list)  # mean training loss per epoch
    best_epoch: int | None = None
    checkpoint_artifact: str | None = None
    checkpoint_dir: str | None = None
    prune_reason: str = ""
    fail_reason: str = ""
    over_budget: bool = False
    walls_hit: list[str] = field(default_factory=list)  # over budget: the walls it hit, "params" and/or "macs"
    duplicate: bool = False
    duplicate_of: int | None = None  # the trial on the same spec it stepped aside for
    repaired_from: str | None = None  # the depth drawn, where the space repaired it to fit the budget
    first_trial: int | None = None  # a retried or re-queued trial: the number of its first run
    resumed_from_trial: int | None = None
    resumed_from_epoch: int = 0  # epochs replayed from an earlier run's checkpoint
    finalist_of: int | None = None  # a final-stage trial: the number of the search trial it trains again
    training_started: str | None = None  # local ISO time its training began, past every check against other trials
    started: datetime.datetime | None = None  # when this run began (Optuna's datetime_start, local time)

    @classmethod
    def of(cls, trial: optuna.trial.FrozenTrial | optuna.Trial) -> "TrialRecord":
        """The record of a finished trial, or of the live one a worker is running."""
        state = getattr(trial, "state", TrialState.RUNNING)
        where = f"trial {trial.number}"
        a = {k: v for k, v in trial.user_attrs.items()
             if k not in ("number", "state", "value", "curve", "seconds", "losses", "baseline", "started")}
        a.update(curve=trial.user_attrs.get("val_acc_per_epoch"), seconds=trial.user_attrs.get("seconds_per_epoch"),
                 losses=trial.user_attrs.get("train_loss_per_epoch"))
        record = cls(number=trial.number, state=state.name,
                     value=trial.value if state == TrialState.COMPLETE else None, **_checked(cls, a, where))
        _require(record.first_trial is None or 0 <= record.first_trial <= record.number, where,
                 f"first_trial {record.first_trial}, not an earlier trial")
        _require(record.finalist_of is None or record.finalist_of >= 0, where, "a negative finalist_of")
        _require(record.train_images is None or record.train_images >= 1, where, "train_images under 1")
        _require(record.checkpoint_artifact is None or ARTIFACT_ID.fullmatch(record.checkpoint_artifact), where,
                 "a checkpoint_artifact that is not an artifact id")
        _require(record.training_started is None or _is_iso_time(record.training_started), where,
                 "a training_started that is not a time")
        record.curve, record.seconds, record.losses = ([float(v) for v in values]
                                                       for values in (record.curve, record.seconds, record.losses))
        record.baseline = trial.user_attrs.get("baseline") is True
        record.started = trial.datetime_start
        return record

    @property
    def training_began(self) -> datetime.datetime | None:
        """When this run's own training began: a copy (retry, re-queue) carries its first run's
        `training_started` until it trains, and that one does not count."""
        began = self.training_started and datetime.datetime.fromisoformat(self.training_started)
        return began if began and self.started and began >= self.started else None

    @property
    def trained(self) -> bool:
        """Has validation accuracies of its own: a waiting trial (re-queued, retried) carries
        copies of its first run's, which it has not trained yet."""
        return bool(self.curve) and self.state != "WAITING"

    @property
    def best_acc(self) -> float | None:
        """The objective if complete, else the best epoch before it stopped."""
        if self.value is not None:
            return self.value
        return max(self.curve) if self.curve else None

    @property
    def counts_as_trained(self) -> bool:
        """Took a place among the study's --trials: trained to the end or until the pruner (or a
        diverging loss) stopped it. Over-budget and duplicate proposals trained nothing."""
        return self.state in ("COMPLETE", "PRUNED") and not self.over_budget and not self.duplicate

    @property
    def rejected(self) -> bool:
        return self.over_budget or self.duplicate

    @property
    def diverged(self) -> bool:
        return self.state == "PRUNED" and self.prune_reason.startswith("diverged")

    @property
    def interrupted(self) -> bool:
        return self.state == "FAIL" and self.fail_reason.startswith("interrupted")

    @property
    def label(self) -> str:
        """The spec's one-line summary, with the baseline named."""
        return self.summary + (f" ({self.baseline_label})" if self.baseline else "")


def baseline_attrs(label: str, spec: dict) -> dict:
    """User attrs of the enqueued baseline trial, so the trial knows what it is before it runs."""
    return {"baseline": True, "baseline_label": label, "spec": spec}


def finalist_attrs(r: TrialRecord) -> dict:
    """User attrs of a final-stage trial: the search trial it trains again, its spec and recipe."""
    return {"finalist_of": r.number, "spec": r.spec, "recipe": r.recipe, "baseline": r.baseline,
            "baseline_label": r.baseline_label}


IDENTITY = ("spec", "summary", "params", "macs", "recipe", "seed", "device", "dataset", "train_images",
            "first_trial", "checkpoint_dir")  # what a trial records of itself before any check


def write_identity(trial: optuna.Trial, identity: dict) -> None:
    """What the trial trains and where (IDENTITY, every key), written before it is checked."""
    if set(identity) != set(IDENTITY):
        raise TypeError(f"a trial's identity is {', '.join(IDENTITY)}, not {', '.join(sorted(identity))}")
    for key, value in identity.items():
        trial.set_user_attr(key, value)


def write_training_started(trial: optuna.Trial) -> None:
    trial.set_user_attr("training_started", datetime.datetime.now().isoformat())


def write_repaired(trial: optuna.Trial, drawn: str) -> None:
    trial.set_user_attr("repaired_from", drawn)


def write_curve(trial: optuna.Trial, curve: list[float], seconds: list[float], losses: list[float]) -> None:
    trial.set_user_attr("val_acc_per_epoch", curve)
    trial.set_user_attr("seconds_per_epoch", seconds)
    trial.set_user_attr("train_loss_per_epoch", losses)


def write_resumed(trial: optuna.Trial, first_trial: int, epochs: int) -> None:
    trial.set_user_attr("resumed_from_trial", first_trial)
    trial.set_user_attr("resumed_from_epoch", epochs)


def write_pruned(trial: optuna.Trial, reason: str, *, walls_hit: tuple[str, ...] = (),
                 duplicate_of: int | None = None) -> None:
    """A trial stopped: by the budget (the walls it hit, resnet_space.walls_hit), as a duplicate
    of another trial, by the pruner or as diverged (the reason says which)."""
    if walls_hit:
        trial.set_user_attr("over_budget", True)
        trial.set_user_attr("walls_hit", list(walls_hit))
    if duplicate_of is not None:
        trial.set_user_attr("duplicate", True)
        trial.set_user_attr("duplicate_of", duplicate_of)
    trial.set_user_attr("prune_reason", reason)


def write_failed(trial: optuna.Trial, reason: str) -> None:
    trial.set_user_attr("fail_reason", reason)


def write_kept(trial: optuna.Trial, checkpoint_artifact: str) -> None:
    trial.set_user_attr("checkpoint_artifact", checkpoint_artifact)


def write_result(trial: optuna.Trial, best_epoch: int) -> None:
    trial.set_user_attr("best_epoch", best_epoch)


def requeue_attrs(trial: optuna.trial.FrozenTrial) -> dict:
    """A failed trial's attrs for its re-run: everything it knew but why it failed."""
    return {k: v for k, v in trial.user_attrs.items() if k != "fail_reason"}


def records(study: optuna.Study, states=None) -> list[TrialRecord]:
    return [TrialRecord.of(t) for t in study.get_trials(deepcopy=False, states=states)]


def ranked(trials: list[TrialRecord]) -> list[TrialRecord]:
    """The complete trials, best validation accuracy first (of equals, the earlier trial)."""
    done = [r for r in trials if r.state == "COMPLETE" and r.value is not None]
    return sorted(done, key=lambda r: (-r.value, r.number))


def best_trials(study: optuna.Study, top: int) -> list[optuna.trial.FrozenTrial]:
    """The study's best `top` complete trials, in the order `ranked` gives."""
    done = {t.number: t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
    return [done[r.number] for r in ranked([TrialRecord.of(t) for t in done.values()])[:top]]


def final_stage(study: optuna.Study) -> optuna.Study | None:
    """The search's final stage, a study of its own in the same storage, once it began."""
    return _final_stage_named(study, StudyRecord.of(study).final_study)


def _final_stage_named(study: optuna.Study, name: str | None) -> optuna.Study | None:
    return None if name is None else optuna.load_study(study_name=name, storage=study_storage(study))


def winner(study: optuna.Study) -> tuple[optuna.Study, optuna.trial.FrozenTrial] | None:
    """(stage's study, trial) of the network the search names: the best finalist by validation
    once every finalist has trained, else the search's best trial; None before any completes."""
    final = final_stage(study)
    won = final_winner(final) if final is not None else None
    if won is not None:
        return final, won
    best = best_trials(study, 1)
    return (study, best[0]) if best else None


def final_winner(final: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The final stage's best trial once every finalist has trained (and one completed), else None."""
    frozen = final.get_trials(deepcopy=False)
    won = finalist_winner([TrialRecord.of(t) for t in frozen])
    return None if won is None else next(t for t in frozen if t.number == won.number)


def finalist_winner(final: list[TrialRecord]) -> TrialRecord | None:
    """Of the final stage's trials, the best once every finalist has trained (and one completed), else None."""
    finalists = latest_finalists(final)
    if any(r.state == "COMPLETE" for r in finalists) and all(r.state in ("COMPLETE", "PRUNED") for r in finalists):
        return ranked(final)[0]
    return None


def trained_count(study: optuna.Study) -> int:
    """Trials that took a place among the study's --trials (TrialRecord.counts_as_trained)."""
    return sum(r.counts_as_trained for r in records(study, states=FINISHED))


def finalist_trials(final: optuna.Study) -> list[TrialRecord]:
    """The final stage's trials, one per finalist (latest_finalists)."""
    return latest_finalists(records(final))


def latest_finalists(final: list[TrialRecord]) -> list[TrialRecord]:
    """Of the final stage's trials, the latest run of each finalist (a retried or re-queued
    finalist is several trials)."""
    latest = {}
    for r in final:
        if r.finalist_of is not None:
            latest[r.finalist_of] = r
    return list(latest.values())


def trial_counts(trials: list[TrialRecord]) -> dict:
    """The counts `best`, the live view and the report all show."""
    over = sum(r.over_budget for r in trials)
    return {
        "trials": len(trials),
        "complete": sum(r.state == "COMPLETE" for r in trials),
        "pruned": sum(r.state == "PRUNED" for r in trials) - over,
        "over_budget": over,
        "failed": sum(r.state == "FAIL" for r in trials),
        "running": sum(r.state == "RUNNING" for r in trials),
    }


# ---------------------------------------------------------------- the study

# Each setting a study's results depend on, and the flag a user changes it with.
SETTING_FLAGS = {"budget": "--budget", "macs_budget": "--macs-budget", "space": "--space (its [space] table)",
                 "recipe": "--space (its [recipe] table)", "epochs": "--epochs", "dataset": "--data",
                 "limit_train": "--limit-train", "trial_images": "--trial-images", "val_size": "--val-size",
                 "seed": "--seed", "sampler": "--sampler"}


@dataclass
class StudyRecord:
    name: str
    budget: int | None = None  # parameters
    macs_budget: int | None = None  # MACs per image; None: no MACs wall
    study_file: str | None = None
    space: dict | None = None
    recipe_space: dict | None = None
    artifact_dir: str | None = None
    split_seed: int = 0
    table_1: list[dict] = field(default_factory=list)
    data: dict | None = None  # the data's description (search.data.DataDescription.to_dict())
    val_size: int = DEFAULT_VAL_SIZE
    limit_train: int | None = None
    trial_images: int | None = None  # the search's trials trained on this many of the training images
    requeued: list[int] = field(default_factory=list)
    retrained: list[dict] = field(default_factory=list)  # `retrain` results: RETRAINED_KEYS each
    exported: dict | None = None  # `best --export`, written by write_exported
    report_artifacts: dict = field(default_factory=dict)
    stage: str = "search"  # or "final": a study of a search's finalists, trained again longer
    final_study: str | None = None  # the search's final stage, once it began
    settings: dict | None = None  # what its results depend on (SETTING_FLAGS); written last, once ready

    @classmethod
    def of(cls, study: optuna.Study) -> "StudyRecord":
        where = f"study {study.study_name!r}"
        attrs = {k: v for k, v in study.user_attrs.items() if k != "name"}
        r = cls(name=study.study_name, **_checked(cls, attrs, where))
        for key in ("budget", "macs_budget", "val_size", "limit_train", "trial_images"):
            _require(getattr(r, key) is None or getattr(r, key) >= 1, where, f"{key} {getattr(r, key)}")
        _require(0 <= r.split_seed < 2**32, where, f"split_seed {r.split_seed}")
        _require(r.stage in ("search", "final"), where, f"stage {r.stage!r}")
        _require(r.final_study in (None, r.name + FINAL_STAGE_SUFFIX), where,
                 f"a final_study other than {r.name + FINAL_STAGE_SUFFIX!r}")
        _require(all(isinstance(v, str) and ARTIFACT_ID.fullmatch(v) for v in r.report_artifacts.values()), where,
                 "report_artifacts that are not artifact ids")
        _require(r.data is None or _is_description(r.data), where, "a data description of the wrong kinds")
        return r

    @property
    def dataset(self) -> str | None:
        """The data's name, e.g. "CIFAR-10" or "cifar10-jpeg (image folder, JPEG)"."""
        return self.data and self.data["name"]

    def outputs(self, artifacts: str | Path, storage: str) -> Outputs:
        """The study's folders beside the artifact store the command line names (a location the
        database records is never where anything is read or written), in `storage`."""
        return Outputs(artifacts, self.name, storage)

    @property
    def walls(self) -> Budget | None:
        """The budget the study searched under, both walls; None for a study that records none."""
        return None if self.budget is None else Budget(self.budget, self.macs_budget)


@dataclass
class Snapshot:
    """A study read once, for what shows many of its numbers together (the report, `best`): its
    record, its trials as Optuna froze them (parameter importances need those) and as records,
    and its final stage's trials. Every number drawn from one snapshot is of the same moment."""

    study: StudyRecord
    frozen: list[optuna.trial.FrozenTrial]
    trials: list[TrialRecord]  # one per frozen trial, in the same order
    final: list[TrialRecord] | None = None  # the final stage's trials; None before it began

    @classmethod
    def of(cls, study: optuna.Study) -> "Snapshot":
        recorded = StudyRecord.of(study)
        frozen = study.get_trials(deepcopy=False)
        final = _final_stage_named(study, recorded.final_study)
        return cls(recorded, frozen, [TrialRecord.of(t) for t in frozen], None if final is None else records(final))


def write_study(study: optuna.Study, **values) -> None:
    """Record study-wide facts; only the names StudyRecord reads are accepted."""
    known = {f.name for f in fields(StudyRecord)} - {"name"}
    unknown = set(values) - known
    if unknown:
        raise TypeError(f"not a study record field: {', '.join(sorted(unknown))}")
    for key, value in values.items():
        study.set_user_attr(key, value)


def write_exported(study: optuna.Study, *, trial: int, test_acc: float, dir: str, dataset: str) -> None:
    """What `best --export` records of its export: the trial, its test accuracy, the folder, the data set."""
    write_study(study, exported={"trial": trial, "test_acc": test_acc, "dir": dir, "dataset": dataset})


# What one `retrain` result records: a trial (or spec) trained on train + validation under its
# recipe with seeds 0..seeds-1, each evaluated once on the test split after its final epoch.
# "seeds" is how many (seeds 0..seeds-1); "test_acc" holds one fraction per seed.
RETRAINED_KEYS = ("label", "trial", "baseline", "summary", "params", "dataset", "epochs", "seeds", "test_acc",
                  "mean", "std", "min", "max", "export_dir")


def write_retrained(study: optuna.Study, entry: dict) -> list[dict]:
    """Record a retraining result with the study, replacing an earlier one of the same trial (or
    spec, for a spec that is no trial of the study), data set, epochs and seeds. Returns the new list.

    entry: RETRAINED_KEYS; label ("trial 7", "baseline: Model 1"), trial (number or None),
    baseline (bool), summary, params, dataset, epochs, seeds (how many: 0..seeds-1), test_acc
    (fractions, one per seed), mean, std (sample std, None for one seed), min, max, export_dir.
    It may carry more (macs, train_images, test_images, export_seed)."""
    missing = set(RETRAINED_KEYS) - set(entry)
    if missing:
        raise TypeError(f"retrained entry lacks: {', '.join(sorted(missing))}")

    def key(e: dict) -> tuple:
        return (e.get("trial"), e.get("summary") if e.get("trial") is None else None, e.get("dataset"),
                e.get("epochs"), e.get("seeds"))

    kept = [e for e in StudyRecord.of(study).retrained if key(e) != key(entry)]
    kept.append(dict(entry))
    write_study(study, retrained=kept)
    return kept
