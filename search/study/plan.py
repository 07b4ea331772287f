"""A search's settings, and the plan they resolve to: every derived value worked out once.

    settings = SearchSettings(budget=5_000_000, trials=50)   # what the user asked for
    plan = Plan.of(settings)                                   # what the search will do

    plan = plan.for_data(data.description)                    # fitted to the data found

The plan holds what the settings, the study file and the data imply together (the budget, the
recipe the baseline trains under and its epochs, the data's shape, the baseline, the output
folders, the device). The search, its objective and its final stage read the plan; nothing works
a setting out a second time. `Plan.of` reads the study file and checks every setting it can
alone (the seed, the heartbeat, the output folders, the device and whether the budget fits its
memory), nothing else: no storage is opened, no folder made and no image decoded. `for_data`
fits the space to the data's side, channels and classes, then checks that its smallest network
fits the budget and scales the baseline to it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from resnet_space import MODEL_1, Budget, Recipe, ResNetSpec, Shape, baseline_spec, count, fits
from resnet_space.errors import UserError
from resnet_space.space import StudyFile

from ..engine.train import device_memory, resolve_device
from .layout import (DEFAULT_ARTIFACTS, DEFAULT_FINALISTS, DEFAULT_SPACE, DEFAULT_STORAGE, DEFAULT_STORAGE_RETRY_S,
                     DEFAULT_STUDY, DEFAULT_TRIALS, DEFAULT_VAL_SIZE, FINAL_STAGE_SUFFIX, HEARTBEAT_S, Outputs,
                     resolve_space)
from .artifacts import open_artifact_store
from .storage import check_storage_url

MAX_SEED = 2**32 - 1
MAX_HEARTBEAT_S = 3600  # past an hour, a dead worker's trial would wait hours for its retry
# Training holds float32 weights, their gradients and up to two optimizer moments (Adam): 16
# bytes a parameter before any activation. A budget past the device's memory builds a network
# the device cannot hold (the kernel kills the worker, leaving its trial RUNNING).
BYTES_PER_PARAM = 16


@dataclass
class SearchSettings:
    """Everything a search is run with. The CLI fills it from its flags; defaults are the CLI's."""

    budget: int | None = None  # parameters; None takes the study file's
    macs_budget: int | None = None  # MACs per image; None takes the study file's (which may have none)
    space: str | Path = DEFAULT_SPACE  # a study file, or the name of a shipped one
    study: str = DEFAULT_STUDY
    storage: str = DEFAULT_STORAGE
    trials: int = DEFAULT_TRIALS  # trained trials in the study in all: running again resumes up to this
    timeout: float | None = None  # seconds after which no new trial starts
    epochs: int | None = None  # overrides the recipe's
    device: str = "auto"  # auto refuses to search on a CPU; name "cpu" to mean it
    data: str | Path | None = None
    limit_train: int | None = None
    trial_images: int | None = None  # search trials train on this many of the training images; the final stage on all
    val_size: int = DEFAULT_VAL_SIZE
    seed: int = 0
    sampler: str = "tpe"  # or "random", the control a search must beat (search/strategy.py)
    artifacts: str | Path | None = None  # None: the study file's `artifacts`, else DEFAULT_ARTIFACTS
    baseline: bool = True
    heartbeat: int = HEARTBEAT_S
    storage_retry: float = DEFAULT_STORAGE_RETRY_S
    finalists: int = DEFAULT_FINALISTS  # 0: no final stage, the search's best is the winner
    final_epochs: int | None = None  # None: twice the search's epochs


def baseline_for(budget: Budget, shape: Shape = Shape()) -> tuple[ResNetSpec, str] | None:
    """(spec, label) of the study's seeded baseline: the report's Model 1, built for the data's
    shape, where it fits under every wall of the budget, else its shape scaled to fit them; None
    where not even the narrowest fits."""
    spec = baseline_spec(budget, shape)
    if spec is None:
        return None
    head = "" if shape == MODEL_1.shape else f" for {shape}"
    if spec.channels == MODEL_1.channels:
        return spec, "Model 1" + head
    counts = count(spec)
    return spec, f"Model 1 scaled to the budget{head}, {counts.params:,} params, {counts.macs:,} MACs"


@dataclass(frozen=True)
class Plan:
    """The settings of one stage of a search, resolved (see the module docstring)."""

    settings: SearchSettings
    study_file: StudyFile
    budget: Budget
    recipe: Recipe  # the recipe at the middle of every searched range, at the stage's epochs
    recipe_params: dict  # the trial params that select `recipe`
    baseline: tuple[ResNetSpec, str] | None  # None: not asked for, nothing of Model 1's shape fits, or no data yet
    outputs: Outputs
    device: torch.device
    stage: str = "search"  # or "final": the finalists trained again, longer and unpruned

    @classmethod
    def of(cls, settings: SearchSettings) -> "Plan":
        if not 0 <= settings.seed <= MAX_SEED:
            raise UserError(f"seed {settings.seed} must be between 0 and {MAX_SEED} (numpy's seeds are 32-bit)")
        if not 1 <= settings.heartbeat <= MAX_HEARTBEAT_S:
            raise UserError(f"heartbeat {settings.heartbeat} s must be between 1 and {MAX_HEARTBEAT_S}: a dead "
                            "worker's trial is retried after 3 of them")
        if settings.study.endswith(FINAL_STAGE_SUFFIX):
            raise UserError(f"study {settings.study!r}: a name ending in {FINAL_STAGE_SUFFIX} is a search's final stage, "
                            "which the search itself runs; run the search (the name without it) instead")
        if settings.trial_images is not None and settings.limit_train is not None \
                and settings.trial_images > settings.limit_train:
            raise UserError(f"--trial-images {settings.trial_images:,} is more than --limit-train "
                            f"{settings.limit_train:,}: trials train on a part of the training images, not more")
        if settings.artifacts is not None and not str(settings.artifacts).strip():
            raise UserError("artifact store '': an empty path names no folder")
        check_storage_url(settings.storage, create=True)  # before any image is decoded and cached
        study_file = StudyFile.load(resolve_space(str(settings.space)))
        artifacts = settings.artifacts or study_file.artifacts or DEFAULT_ARTIFACTS
        open_artifact_store(artifacts, create=False)  # a store that cannot be used, refused now
        outputs = Outputs(artifacts, settings.study, settings.storage)
        budget = Budget(settings.budget or study_file.budget.params, settings.macs_budget or study_file.budget.macs)
        device = resolve_device(settings.device)
        need, have = BYTES_PER_PARAM * budget.params, device_memory(device)
        if need > have:
            raise UserError(f"budget {budget.params:,} params: a network that size needs about {need / 2**30:,.0f} GiB "
                            f"to train ({BYTES_PER_PARAM} bytes a parameter) but device {device} has "
                            f"{have / 2**30:,.0f} GiB; lower the budget")
        recipe, params = study_file.center_recipe(settings.epochs)
        return cls(settings, study_file, budget, recipe, params, None, outputs, device)

    def for_data(self, shape: Shape) -> "Plan":
        """The plan fitted to data of `shape`: the space's networks and the baseline built for it.
        Refuses a space none of whose networks fits the budget at that shape."""
        study_file = self.study_file.for_shape(shape)
        smallest = study_file.smallest_specs()
        if not any(fits(spec, self.budget) for spec in smallest):
            smallest = min(smallest, key=lambda spec: count(spec).params)
            counts = count(smallest)
            raise UserError(f"study file {study_file.path}: its smallest network, {smallest.summary()}, has "
                            f"{counts.params:,} params and {counts.macs:,} MACs, not under the budget of "
                            f"{self.budget}: nothing in this space fits; raise the budget or narrow the space")
        baseline = baseline_for(self.budget, shape) if self.settings.baseline else None
        return dataclasses.replace(self, study_file=study_file, baseline=baseline)

    @property
    def epochs(self) -> int:
        return self.recipe.epochs

    @property
    def study(self) -> str:
        return self.outputs.study

    def final_stage(self, finalists: int) -> "Plan":
        """The plan of the final stage: its own study in the same storage (so no pruner or sampler
        ever mixes training lengths), `finalists` trials, each trained to the final epochs."""
        epochs = self.settings.final_epochs or 2 * self.epochs
        study = self.study + FINAL_STAGE_SUFFIX
        settings = dataclasses.replace(self.settings, study=study, trials=finalists, epochs=epochs, timeout=None,
                                       trial_images=None)
        return dataclasses.replace(self, settings=settings, recipe=self.study_file.center_recipe(epochs)[0],
                                   outputs=Outputs(self.outputs.artifacts, study, self.outputs.storage),
                                   stage="final")

    def study_settings(self, dataset: str) -> dict:
        """What the stage's results depend on (record.SETTING_FLAGS): a study resumed with other
        values is refused, since its trials would not compare."""
        s = self.settings
        recipe_table = {k: list(v) if isinstance(v, tuple) else v for k, v in self.study_file.recipe.items()}
        return {"budget": self.budget.params, "macs_budget": self.budget.macs, "space": self.study_file.space,
                "recipe": recipe_table, "epochs": self.epochs, "dataset": dataset, "limit_train": s.limit_train,
                "trial_images": s.trial_images, "val_size": s.val_size, "seed": s.seed, "sampler": s.sampler}
