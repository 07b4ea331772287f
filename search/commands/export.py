"""`best --export`: the winning trial's checkpoint (or, with --trial, any complete trial's),
evaluated once on the test set, handed over as files that need nothing of this package to use
(model.pt2 loads with plain torch).
`retrain` hands over its result through the same writer, write_export."""

from __future__ import annotations

import json
import tempfile
from importlib import metadata
from pathlib import Path

import optuna
import torch
from optuna.artifacts import download_artifact
from torch import nn

from resnet_space import ResNetSpec, count
from resnet_space.errors import UserError

from ..engine.data import DataDescription, DataError, Dataset, UnsafeFile, load_for, study_data_root
from ..engine.train import evaluate, load_model, portable_state_dict
from ..private import unwrapped
from ..study.layout import writable_folder
from ..study.record import StudyRecord, TrialRecord, write_exported
from ..study.artifacts import StoreUnreachable, open_artifact_store


class ExportError(UserError):
    """The winner cannot be exported; one line."""


class Exported(nn.Module):
    """The exported program: float images in [0, 1], (N, channels, side, side) of the data it was
    trained on, as torchvision's ToTensor gives them; the data's normalisation happens inside, and
    so does the flip test-time augmentation when the recipe evaluates with it (logits of the image
    and its mirror, averaged), so the program gives exactly the test accuracy its metrics.json
    records."""

    def __init__(self, model: nn.Module, flip_tta: bool, description: DataDescription):
        super().__init__()
        self.model, self.flip_tta = model, flip_tta
        mean, std = description.stats()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        logits = self.model(x)
        return (logits + self.model(x.flip(-1))) / 2 if self.flip_tta else logits


def load_trial_model(trial: optuna.trial.FrozenTrial, artifacts: str | Path) -> nn.Module:
    """The network a trial kept as an artifact in the store at `artifacts` (the command line's,
    never a location the database names)."""
    r = TrialRecord.of(trial)
    if not r.checkpoint_artifact:
        raise ExportError(f"trial {trial.number} kept no checkpoint")
    store = open_artifact_store(artifacts, create=False)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "best.pt"
        try:
            download_artifact(artifact_store=store, artifact_id=r.checkpoint_artifact, file_path=str(path))
        except StoreUnreachable:
            raise
        except Exception as e:  # noqa: BLE001 - missing store, missing file, permissions
            raise ExportError(f"checkpoint of trial {trial.number} not found in artifact store {artifacts} "
                              f"({type(e).__name__}); pass the --artifacts the study was run with") from None
        try:
            return load_model(ResNetSpec.from_dict(r.spec), path)
        except UnsafeFile:
            raise ExportError(f"checkpoint of trial {trial.number} ({str(artifacts).rstrip('/')}/{r.checkpoint_artifact}) names "
                              "code to run, not only tensors: refused unread; delete it") from None
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 - torn, foreign, or weights of another network
            raise ExportError(f"checkpoint of trial {trial.number} cannot be read: "
                              f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}") from None


def exportable_trial(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial:
    """Trial `number` of the search `study`, for `best --export --trial`: one that completed and so
    kept its checkpoint."""
    trials = study.get_trials(deepcopy=False)
    if number >= len(trials):
        raise ExportError(f"study {study.study_name!r} has no trial {number} (its trials are 0 to {len(trials) - 1})")
    trial = trials[number]
    if trial.state != optuna.trial.TrialState.COMPLETE:
        raise ExportError(f"trial {number} of study {study.study_name!r} is {trial.state.name.lower()}: only a "
                          "complete trial keeps a checkpoint to export")
    return trial


EXPORT_FILES = ("spec.json", "state_dict.pt", "model.pt2", "model.onnx", "metrics.json")
ONNX_MISSING = "model.onnx not written: the onnx extra is not installed (pip install 'resnet-search[onnx]')"
IN_PROGRESS = ".export-in-progress"  # written first and removed last: a folder holding it is a half export


def final_run(study: optuna.Study, number: int) -> tuple[optuna.Study, optuna.trial.FrozenTrial] | None:
    """(final stage, trial) of search trial `number`'s completed final-stage run, if it has one."""
    from ..study.record import final_stage

    final = final_stage(study)
    runs = [] if final is None else [t for t in final.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                                     if TrialRecord.of(t).finalist_of == number]
    return (final, runs[-1]) if runs else None


def export_folder(out: Path) -> Path:
    """`out` if an export can be written there: a new or empty folder, not under a file, or a
    half export a killed `best --export` left (its own files only), which is written over."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        names = {p.name for p in out.iterdir()} if out.is_dir() else set()
        if not (IN_PROGRESS in names and names <= {IN_PROGRESS, *EXPORT_FILES}):
            raise ExportError(f"export path {out} exists and is not an empty directory; choose a new one")
    return writable_folder(out, "export path")


def study_data(recorded: StudyRecord, spec: ResNetSpec, data_root=None) -> Dataset:
    """The study's own images again, split as its search split them (study_data_root says from
    where; images other than the study's are refused by their fingerprint)."""
    return load_for(spec, study_data_root(recorded.data, data_root), (recorded.data or {}).get("fingerprint"),
                    val_size=recorded.val_size, limit_train=recorded.limit_train, seed=recorded.split_seed)


def export_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial, out: Path, artifacts: str | Path,
                 data_root=None, search: optuna.Study | None = None) -> dict:
    """Export the trial of `study` (a search, or its final stage) to out, scored once on the test
    split, and record the export with the search (`search`, default `study`; the report names it).
    A finalist is named by the search trial it trained again. Returns the metrics."""
    r, recorded = TrialRecord.of(trial), StudyRecord.of(study)
    spec = ResNetSpec.from_dict(r.spec)
    model = load_trial_model(trial, artifacts)
    try:
        data = study_data(recorded, spec, data_root)
    except DataError as e:
        raise ExportError(f"test set unavailable ({e})") from None
    tta = r.recipe.get("flip_tta", False)
    test_acc = evaluate(model, data.test, data.description, torch.device("cpu"), flip_tta=tta)
    plain = evaluate(model, data.test, data.description, torch.device("cpu")) if tta else test_acc
    number = trial.number if r.finalist_of is None else r.finalist_of
    metrics = write_export(out, model, spec, data.description, study=(search or study).study_name, trial=number,
                           val_acc=trial.value,
                           test_acc=test_acc, test_flip_tta=tta, test_acc_without_flip=plain, dataset=data.name,
                           test_images=len(data.test), seed=r.seed, recipe=r.recipe,
                           stage="final" if r.finalist_of is not None else "search", epochs=len(r.curve))
    write_exported(search or study, trial=number, test_acc=test_acc, dir=str(Path(out).resolve()), dataset=data.name)
    return metrics


def write_export(out: Path, model: nn.Module, spec: ResNetSpec, description: DataDescription, *, study: str,
                 trial: int | None, **numbers) -> dict:
    """The one writer of an export, for `best --export` and `retrain`: spec.json, state_dict.pt,
    model.pt2 (float images in [0, 1], normalised inside) and metrics.json, which holds the study,
    trial, spec summary, params and MACs, then `numbers` as given, then how to feed the model, the
    data's description and the versions that made it. The model may come as training left it (channels_last, on CUDA,
    wrapped by torch.compile): it is exported as a float32, contiguous CPU module under its plain
    names, and moved so in place. Returns the metrics."""
    model = unwrapped(model)
    model = model.to("cpu", torch.float32, memory_format=torch.contiguous_format).eval()
    out.mkdir(parents=True, exist_ok=True)
    (out / IN_PROGRESS).write_text("an export being written; a killed one is written over by the same command\n")
    (out / "spec.json").write_text(json.dumps(spec.to_dict(), indent=2) + "\n")
    torch.save(portable_state_dict(model), out / "state_dict.pt")
    wrapped = Exported(model, numbers.get("test_flip_tta", False), description).eval()
    batch = torch.export.Dim("batch", min=1)  # no upper bound: any batch size
    side, channels = description.side, description.channels
    program = torch.export.export(wrapped, (torch.rand(2, channels, side, side),), dynamic_shapes=({0: batch},))
    torch.export.save(program, out / "model.pt2")
    onnx = _write_onnx(program, out / "model.onnx")
    counts = count(spec)
    metrics = {
        "study": study,
        "trial": trial,
        "summary": spec.summary(),
        "params": counts.params,
        "macs": counts.macs,
        **numbers,
        "input": f"float (N, {channels}, {side}, {side}) in [0, 1] for model.pt2 (test_acc; flip-averaged inside "
                 "when test_flip_tta); normalised by `normalisation` for state_dict.pt (test_acc_without_flip)",
        "normalisation": {"mean": list(description.mean), "std": list(description.std)},
        "onnx": onnx,
        "data": description.to_dict(),
        "versions": {name: _version(name) for name in ("resnet-search", "torch", "torchvision", "optuna", "onnx")},
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out / IN_PROGRESS).unlink()
    return metrics


def _write_onnx(program: torch.export.ExportedProgram, path: Path) -> str:
    """model.onnx: model.pt2's very program (normalisation and flip inside, any batch size),
    translated by torch's exporter (it needs onnx and onnxscript). Returns "model.onnx", or
    ONNX_MISSING where those are not installed: the export writes the rest."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        return ONNX_MISSING
    torch.onnx.export(program, f=str(path), dynamo=True, verbose=False, external_data=False)
    return path.name


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"
