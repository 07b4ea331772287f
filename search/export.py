"""`best --export`: the winning trial's checkpoint, evaluated once on the test set, handed over
as files that need nothing of this package to use (model.pt2 loads with plain torch)."""

from __future__ import annotations

import json
import tempfile
from importlib import metadata
from pathlib import Path

import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore, download_artifact
from torch import nn

from resnet_space import ResNetSpec, count
from resnet_space.model import build_model

from .data import CIFAR10_MEAN, CIFAR10_STD, DataError, load_cifar10
from .train import evaluate, load_checkpoint


class ExportError(Exception):
    """The winner cannot be exported; one line."""


class Normalized(nn.Module):
    """The exported program's input: float images in [0, 1], (N, 3, 32, 32), as torchvision's
    ToTensor gives them; CIFAR-10 normalisation happens inside."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(CIFAR10_STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


def load_trial_model(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> nn.Module:
    artifact = trial.user_attrs.get("checkpoint_artifact")
    if not artifact:
        raise ExportError(f"trial {trial.number} kept no checkpoint")
    store = FileSystemArtifactStore(study.user_attrs["artifact_dir"])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "best.pt"
        try:
            download_artifact(artifact_store=store, artifact_id=artifact, file_path=str(path))
        except Exception as e:  # noqa: BLE001 - missing store, missing file, permissions
            raise ExportError(f"checkpoint of trial {trial.number} not found in {study.user_attrs['artifact_dir']}: "
                              f"{e}") from None
        state = load_checkpoint(path)
    model = build_model(ResNetSpec.from_dict(trial.user_attrs["spec"]))
    model.load_state_dict(state["model"])
    return model.eval()


def export_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial, out: Path, data_root=None) -> dict:
    spec = ResNetSpec.from_dict(trial.user_attrs["spec"])
    model = load_trial_model(study, trial)
    attrs = study.user_attrs
    try:
        data = load_cifar10(data_root or attrs.get("data_root"), val_size=attrs.get("val_size", 5000),
                            seed=attrs.get("split_seed", 0), download=False)
    except DataError as e:
        raise ExportError(f"test set unavailable ({e})") from None
    tta = trial.user_attrs.get("recipe", {}).get("flip_tta", False)
    test_acc = evaluate(model, data.test.images, data.test.labels, torch.device("cpu"), flip_tta=tta)

    out.mkdir(parents=True, exist_ok=True)
    (out / "spec.json").write_text(json.dumps(spec.to_dict(), indent=2) + "\n")
    torch.save(model.state_dict(), out / "state_dict.pt")
    wrapped = Normalized(model).eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(wrapped, (torch.rand(2, 3, 32, 32),), dynamic_shapes=({0: batch},))
    torch.export.save(program, out / "model.pt2")
    counts = count(spec)
    metrics = {
        "study": study.study_name,
        "trial": trial.number,
        "summary": spec.summary(),
        "params": counts.params,
        "macs": counts.macs,
        "val_acc": trial.value,
        "test_acc": test_acc,
        "test_flip_tta": tta,
        "dataset": data.name,
        "test_images": len(data.test),
        "seed": trial.user_attrs.get("seed"),
        "recipe": trial.user_attrs.get("recipe"),
        "input": "float (N, 3, 32, 32) in [0, 1] for model.pt2; CIFAR-10-normalised for state_dict.pt",
        "normalisation": {"mean": CIFAR10_MEAN, "std": CIFAR10_STD},
        "versions": {name: _version(name) for name in ("resnet-search", "torch", "torchvision", "optuna")},
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"
