"""`resnet-search retrain`: a study's winner (or its seeded baseline, a named trial, or a spec
file) trained again on the whole training split -- the search's training and validation images
together -- under the recipe the search gave it, once per seed 0..K-1, and each run evaluated once
on the test split after its final epoch. Nothing is selected on test, and with no held-out split
nothing is selected at all: the final weights are the result.

    from search.retrain import RetrainSettings, retrain
    result = retrain(RetrainSettings(study="c10-5m", storage=URL, seeds=3, device="cuda"))
    print(result.entry["mean"], result.entry["std"])

Everything lives in one folder per run (default: retrain/STUDY/trial-N beside the study's
artifacts, then epochs-E/): seed-K.json for each finished seed, seed-K/last.pt (the epoch
checkpoint a stopped seed resumes from exactly, and the final weights of a finished one), run.json
(what the run trains, so a folder holding another run's files starts over), and export-K-seeds/
(the same files as `best --export`, of the seed closest to the mean). The result is recorded with
the study (record.write_retrained), which `best` and the report show.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import optuna
import torch

from resnet_space import Recipe, ResNetSpec, SpecError, count, fits
from resnet_space.errors import UserError
from resnet_space.space import center_recipe

from ..engine.data import Dataset, ImageSet
from ..engine.files import save_atomic
from ..engine.train import Diverged, Epoch, completed_epochs, cpu_estimate, evaluate, load_model, resolve_device, train
from ..study import record
from ..study.layout import DEFAULT_ARTIFACTS, DEFAULT_STORAGE, invoked_as, plural, writable_folder
from .export import study_data


class RetrainError(UserError):
    """A retraining that cannot start: an unknown or untrained trial, a bad spec file, ...; one line."""


@dataclass
class RetrainSettings:
    """What `resnet-search retrain` is run with; the defaults are the CLI's."""

    study: str | None = None  # None: the storage's only study, else the one run last
    storage: str = DEFAULT_STORAGE
    trial: int | None = None  # None: the study's best trial
    spec: str | Path | None = None  # a spec.json (as `best --export` writes) instead of a trial
    baseline: bool = False  # the study's seeded baseline trial
    epochs: int | None = None  # None: the recipe's own
    seeds: int = 3  # seeds 0..seeds-1
    device: str = "auto"
    data: str | Path | None = None  # None: RESNET_SEARCH_DATA, else the named data set the study recorded
    artifacts: str | Path = DEFAULT_ARTIFACTS  # the store the study's checkpoints went to
    out: str | Path | None = None  # None: Outputs(artifacts, study).retrain / "trial-N"


@dataclass
class Target:
    """The network to retrain and how."""

    label: str  # "trial 7", "baseline: Model 1", "spec N3 B1-1-1 ..."
    trial: int | None  # None for a spec that is no trained trial of the study
    baseline: bool
    spec: ResNetSpec
    recipe: Recipe  # at the retraining's epochs
    val_acc: float | None  # what the search measured on its validation split
    folder: str  # the default folder's name under Outputs.retrain


@dataclass
class RetrainResult:
    target: Target
    entry: dict  # as recorded with the study (record.RETRAINED_KEYS and a few more)
    seeds: list[dict] = field(default_factory=list)  # seed-K.json of each seed
    run_dir: Path = Path(".")
    export: dict = field(default_factory=dict)  # the export's metrics.json


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- what to retrain


def choose_target(study: optuna.Study, settings: RetrainSettings) -> Target:
    """The trial (or spec) settings name, checked: it exists, it trained, it fits the budget."""
    if settings.seeds < 1:
        raise RetrainError(f"--seeds must be at least 1, not {settings.seeds}")
    if settings.epochs is not None and settings.epochs < 1:
        raise RetrainError(f"--epochs must be at least 1, not {settings.epochs}")
    named = [flag for flag, given in (("--trial", settings.trial is not None), ("--spec", settings.spec is not None),
                                      ("--baseline", settings.baseline)) if given]
    if len(named) > 1:
        raise RetrainError(f"{' and '.join(named)} each name the network to retrain; give one of them")
    if settings.spec is not None:
        return _spec_target(study, Path(settings.spec), settings.epochs)
    if settings.baseline:
        baselines = [t for t in study.get_trials(deepcopy=False) if record.TrialRecord.of(t).baseline]
        if not baselines:
            raise RetrainError(f"study {study.study_name!r} has no seeded baseline trial "
                               "(it was run with --no-baseline); retrain a --trial or a --spec instead")
        # A baseline stopped and re-queued is several trials: the one that trained.
        trained = [t for t in baselines if _why_untrained(record.TrialRecord.of(t)) is None]
        return _trial_target(study, (trained or baselines)[0], settings.epochs)
    if settings.trial is not None:
        trials = study.get_trials(deepcopy=False)
        if not 0 <= settings.trial < len(trials):
            raise RetrainError(f"study {study.study_name!r} has no trial {settings.trial}"
                               + (f" (its trials are 0 to {len(trials) - 1})" if trials else " (it has none)"))
        return _trial_target(study, trials[settings.trial], settings.epochs)
    found = record.winner(study)
    if found is None:
        raise RetrainError(f"study {study.study_name!r} has no completed trial yet; run `{invoked_as()} run` first")
    return _trial_target(*found, settings.epochs)


def _why_untrained(r: record.TrialRecord) -> str | None:
    """None if the trial trained to a result that can be retrained, else why not. A trial the
    pruner stopped counts: its recipe is whole, only its epochs were cut short."""
    if r.rejected:
        return f"it never trained ({r.prune_reason or 'rejected before training'})"
    if r.state == "COMPLETE":
        return None if r.spec and r.recipe else "it recorded no spec or recipe"
    if r.state == "PRUNED" and r.trained and not r.diverged and r.spec and r.recipe:
        return None
    if r.diverged:
        return f"it did not finish training ({r.prune_reason})"
    return f"it never finished training (state {r.state.lower()}{': ' + r.fail_reason if r.fail_reason else ''})"


def _recipe(recipe: dict, epochs: int | None) -> Recipe:
    return Recipe.from_dict({**recipe, **({"epochs": epochs} if epochs else {})})


def _trial_target(study: optuna.Study, trial: optuna.trial.FrozenTrial, epochs: int | None) -> Target:
    """A trial of the search, or a finalist of its final stage (named by the search trial it
    trained again, with the final stage's recipe and validation accuracy)."""
    r = record.TrialRecord.of(trial)
    why = _why_untrained(r)
    if why is not None:
        raise RetrainError(f"trial {r.number} of study {study.study_name!r} cannot be retrained: {why}")
    number = r.number if r.finalist_of is None else r.finalist_of
    label = f"baseline: {r.baseline_label or 'Model 1'}" if r.baseline else f"trial {number}"
    if r.finalist_of is not None:
        label += " (final stage)"
    return Target(label, number, r.baseline, ResNetSpec.from_dict(r.spec), _recipe(r.recipe, epochs),
                  r.best_acc, f"trial-{number}")


def _spec_target(study: optuna.Study, path: Path, epochs: int | None) -> Target:
    """A spec file: the study's trained trial of that very spec if there is one (its recipe and
    number), else the study's recipe at the middle of its searched ranges and at the study's
    epochs, as the baseline got."""
    try:
        spec = ResNetSpec.from_json(path.read_text())
    except OSError as e:
        raise RetrainError(f"spec file {path} cannot be read: {e.strerror or e}") from None
    except (SpecError, ValueError, TypeError, UnicodeDecodeError) as e:
        raise RetrainError(f"spec file {path} is not a spec: {str(e).splitlines()[0]}") from None
    recorded = record.StudyRecord.of(study)
    budget = recorded.walls
    if budget is not None and not fits(spec, budget):
        counts = count(spec)
        raise RetrainError(f"spec {spec.summary()} in {path} has {counts.params:,} params and {counts.macs:,} MACs, "
                           f"not under study {study.study_name!r}'s budget of {budget}")
    same = [t for t in study.get_trials(deepcopy=False)
            if (r := record.TrialRecord.of(t)).spec == spec.to_dict() and _why_untrained(r) is None]
    if same:
        return _trial_target(study, max(same, key=lambda t: (record.TrialRecord.of(t).best_acc, -t.number)), epochs)
    recipe_space = recorded.recipe_space
    if recipe_space is None:
        raise RetrainError(f"study {study.study_name!r} records no recipe for a spec it never trained; "
                           "retrain one of its trials with --trial instead")
    epochs = epochs or (recorded.settings or {}).get("epochs")
    recipe = center_recipe(recipe_space, epochs)[0]
    digest = hashlib.sha1(spec.to_json().encode()).hexdigest()[:10]
    return Target(f"spec {spec.summary()}", None, False, spec, recipe, None, f"spec-{digest}")


# ---------------------------------------------------------------- data and folders


def full_training_data(recorded: record.StudyRecord, spec: ResNetSpec, data_root=None) -> Dataset:
    """The study's data with its training and validation images together as the training set
    (the study's --limit-train, if any, still applies) and no validation split; data that `spec`
    is not built for (other classes, side or channels) is refused. Its description (the
    normalisation) stays the search's: measured on the search's training split."""
    data = study_data(recorded, spec, data_root)
    train_set = ImageSet(torch.cat([data.train.images, data.val.images]),
                         torch.cat([data.train.labels, data.val.labels]))
    empty = ImageSet(data.val.images[:0], data.val.labels[:0])
    return dataclasses.replace(data, train=train_set, val=empty)


def run_folder(recorded: record.StudyRecord, target: Target, settings: RetrainSettings) -> Path:
    if settings.out is not None:
        out = Path(settings.out)
    else:
        out = recorded.outputs(settings.artifacts, settings.storage).retrain / target.folder
    return writable_folder(out, "retrain folder") / f"epochs-{target.recipe.epochs}"


def _write_json(path: Path, value: dict) -> None:
    """Write then rename, so a stop mid-write never leaves a torn file."""
    save_atomic(path, lambda tmp: tmp.write_text(json.dumps(value, indent=2) + "\n"))


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _start_over_if_other_run(run_dir: Path, identity: dict, log) -> None:
    """A run folder that holds another run's seeds (other data, spec or recipe) starts over."""
    found = _read_json(run_dir / "run.json")
    if found is not None and found != identity:
        log(f"{run_dir} held a retraining of other data or another network; starting it over")
        for path in run_dir.glob("seed-*"):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        for path in run_dir.glob("export-*-seeds"):
            shutil.rmtree(path, ignore_errors=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_json(run_dir / "run.json", identity)


def final_model(checkpoint_dir: Path, spec: ResNetSpec) -> torch.nn.Module:
    """The weights after a seed's final epoch (its last.pt), on the CPU."""
    return load_model(spec, checkpoint_dir / "last.pt")


def summarize(accs: list[float]) -> dict:
    """Mean, sample standard deviation (ddof=1; None for one seed), min and max."""
    return {"mean": statistics.fmean(accs), "std": statistics.stdev(accs) if len(accs) > 1 else None,
            "min": min(accs), "max": max(accs)}


def closest_to_mean(accs: list[float]) -> int:
    mean = statistics.fmean(accs)
    return min(range(len(accs)), key=lambda i: (abs(accs[i] - mean), i))


# ---------------------------------------------------------------- the run


def retrain(settings: RetrainSettings, *, log: Callable[[str], None] = _log, progress=False,
            on_epoch: Callable[[int, Epoch], None] | None = None, study: optuna.Study | None = None) -> RetrainResult:
    """Retrain, resume or just collect (seeds already finished are kept), export the seed
    closest to the mean and record the result with the study. Bad settings raise RetrainError
    (or another UserError) before anything is trained. Ctrl-C (KeyboardInterrupt) leaves the
    finished seeds' files and the running seed's last epoch checkpoint to resume from.
    on_epoch(seed, Epoch) runs after every epoch (what it raises stops the run there)."""
    from .export import write_export
    from ..study.storage import load_study, open_storage

    if study is None:
        study = load_study(open_storage(settings.storage), settings.study, log)
    target = choose_target(study, settings)
    spec, recipe, epochs = target.spec, target.recipe, target.recipe.epochs
    counts, recorded = count(spec), record.StudyRecord.of(study)
    run_dir = run_folder(recorded, target, settings)
    data = full_training_data(recorded, spec, settings.data)
    device = resolve_device(settings.device)
    if settings.device == "auto" and device.type == "cpu":
        tests = len(data.test) * settings.seeds + (len(data.test) // 2 if recipe.flip_tta else 0)  # + the export's
        took = cpu_estimate(spec, recipe, train_images=len(data.train), epochs=epochs * settings.seeds,
                            eval_images=tests)
        raise RetrainError(f"no CUDA device here: retraining {target.label} ({len(data.train):,} images x "
                           f"{plural(epochs, 'epoch')} x {plural(settings.seeds, 'seed')}) would take {took}; "
                           "pass --device cpu to retrain on it anyway")
    identity = {"study": study.study_name, "label": target.label, "spec": spec.to_dict(), "recipe": recipe.to_dict(),
                "dataset": data.name, "fingerprint": data.description.fingerprint,
                "train_images": len(data.train), "test_images": len(data.test)}
    for seed in range(settings.seeds):  # a checkpoint that names code to run is refused before anything is written
        completed_epochs(run_dir / f"seed-{seed}", spec, recipe, seed)
    _start_over_if_other_run(run_dir, identity, log)
    log(f"retraining {target.label} ({spec.summary()}, {counts.params:,} params) of study {study.study_name!r} "
        f"on {data.name}: {len(data.train):,} training + validation images, {plural(epochs, 'epoch')}, "
        f"{plural(settings.seeds, 'seed')}, device {device}; test once on {len(data.test):,} images after the final epoch; "
        f"folder {run_dir}")

    each = Seeds(run_dir, spec, recipe, data, device, log, progress, on_epoch)
    seeds = [each.run(seed) for seed in range(settings.seeds)]
    accs = [s["test_acc"] for s in seeds]
    stats = summarize(accs)
    pick = closest_to_mean(accs)
    export_dir = run_dir / f"export-{settings.seeds}-seeds"
    shutil.rmtree(export_dir, ignore_errors=True)  # an export of an earlier result never lingers
    model = final_model(run_dir / f"seed-{pick}", spec)
    plain = evaluate(model, data.test, data.description, torch.device("cpu")) if recipe.flip_tta else accs[pick]
    export = write_export(
        export_dir, model, spec, data.description, study=study.study_name, trial=target.trial,
        label=target.label, baseline=target.baseline, val_acc=target.val_acc, test_acc=accs[pick],
        test_flip_tta=recipe.flip_tta, test_acc_without_flip=plain, dataset=data.name, train_images=len(data.train),
        test_images=len(data.test), seed=pick, recipe=recipe.to_dict(),
        retrained={"training_set": "the search's training and validation images together",
                   "evaluated": "once on the test split, after the final epoch (no selection)",
                   "epochs": epochs, "seeds": list(range(settings.seeds)), "test_acc": accs, **stats,
                   "export_seed": pick, "per_seed": seeds},
    )
    entry = {"label": target.label, "trial": target.trial, "baseline": target.baseline, "summary": spec.summary(),
             "params": counts.params, "macs": counts.macs, "dataset": data.name, "epochs": epochs,
             "seeds": settings.seeds, "test_acc": accs, **stats, "export_dir": str(export_dir.resolve()),
             "train_images": len(data.train), "test_images": len(data.test), "export_seed": pick}
    record.write_retrained(study, entry)
    return RetrainResult(target, entry, seeds, run_dir, export)


@dataclass
class Seeds:
    """What the seeds of one retraining share: its folder, the network and recipe, the data, the
    device, and where it reports (log lines, the progress bar, on_epoch(seed, Epoch))."""

    run_dir: Path
    spec: ResNetSpec
    recipe: Recipe
    data: Dataset
    device: torch.device
    log: Callable[[str], None]
    progress: object  # as train() takes it: False, or a rich Progress
    on_epoch: Callable[[int, Epoch], None] | None

    def run(self, seed: int) -> dict:
        """A finished seed's result from its file, or train it (resuming its checkpoint) and test it."""
        run_dir, spec, recipe, data, log, on_epoch = (self.run_dir, self.spec, self.recipe, self.data, self.log,
                                                      self.on_epoch)
        result_file, checkpoint_dir = run_dir / f"seed-{seed}.json", run_dir / f"seed-{seed}"
        done = completed_epochs(checkpoint_dir, spec, recipe, seed)
        kept = _read_json(result_file)
        if kept is not None and kept.get("seed") == seed and len(done) == recipe.epochs:
            log(f"seed {seed}: kept from an earlier run: test {kept['test_acc']:.2%}")
            return kept
        if done:
            log(f"seed {seed}: resuming after epoch {len(done)} of {recipe.epochs}")

        def report(e: Epoch) -> None:
            if on_epoch is not None:
                on_epoch(seed, e)

        try:
            result = train(spec, data, recipe, device=self.device, seed=seed, checkpoint_dir=checkpoint_dir,
                           progress=self.progress, on_epoch=report, validate=False)
        except Diverged as e:
            raise RetrainError(f"seed {seed} diverged ({e}); finished seeds are kept in {run_dir}: retrain with "
                               "fewer --epochs or another recipe") from None
        # The test split, once, from the final weights, on the CPU in float32 as `best --export` does,
        # so the exported model.pt2 gives the very number recorded.
        test_acc = evaluate(final_model(checkpoint_dir, spec), data.test, data.description, torch.device("cpu"),
                            flip_tta=recipe.flip_tta)
        history = result.history
        seed_result = {"seed": seed, "test_acc": test_acc, "epochs": recipe.epochs, "train_loss_last": history[-1].loss,
                       "seconds": sum(e.seconds for e in history), "resumed_from_epoch": result.resumed_from,
                       "device": result.device}
        _write_json(result_file, seed_result)
        log(f"seed {seed}: test {test_acc:.2%} after {plural(recipe.epochs, 'epoch')} (final weights)")
        return seed_result
