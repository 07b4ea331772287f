"""The training engine: one code path for CUDA and CPU, whole dataset resident on the device.

Why it is fast (the habits of the fast public CIFAR-10 trainers, airbench and Page's ResNet-9):
- the uint8 dataset lives on the training device and is augmented there in whole batches
  (engine/data.py), so no per-sample PIL work or DataLoader workers sit on the hot path;
- on CUDA: bf16 autocast, channels_last, cudnn.benchmark, and torch.compile when asked
  (Numerics below; the CPU can be asked for the same settings, numerics="cuda", which is how
  the tests prove that path without a GPU);
- the learning rate is a pure function of the step, so a resumed run needs no scheduler state;
- the loss is summed on the device and read once per epoch, so steps never wait on the host.
It imports neither optuna nor any view: anyone can train a spec with `train(spec, data, recipe)`.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, ContextManager

import torch
from torch import nn

from resnet_space import Recipe, ResNetSpec, count
from resnet_space.errors import UserError
from resnet_space.model import build_model

from ..private import cpp_compiler, unwrapped
from .data import DataDescription, Dataset, ImageSet, TrainingSet, UnsafeFile, check_shape, load_plain
from .files import save_atomic


class DeviceError(UserError):
    """A device that is not present; one line for the user."""


class Diverged(RuntimeError):
    """The loss became NaN or infinite: the run stops with this reason."""


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"device {name!r} is not auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if count == 0:
            raise DeviceError(f"device {name!r} asked for, but this machine has no CUDA device")
        if device.index is not None and device.index >= count:
            raise DeviceError(f"device {name!r} asked for, but this machine has {count} CUDA device(s)")
    elif device.type != "cpu":
        raise DeviceError(f"device {name!r} is not auto, cpu, cuda or cuda:N")
    return device


def device_memory(device: torch.device) -> int:
    """Bytes of memory the device has in all: a CUDA device's own, or the machine's for the CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@dataclass(frozen=True)
class Numerics:
    """How the training steps and the validation pass compute. Two settings exist, by name:
    "cuda", what a CUDA device gets by default (bf16 autocast, channels_last memory format, the
    resident training set stored in bf16, cuDNN autotuning), and "fp32", the CPU's default (plain
    float32, contiguous tensors). Either runs on either device: "cuda" on a CPU autocasts with
    torch.autocast("cpu", dtype=torch.bfloat16), so the GPU's code path is exercised without a GPU
    (cuDNN autotuning is then moot). Whatever the numerics, a model's parameters stay float32 and
    checkpoints hold float32 contiguous weights (portable_state_dict)."""

    name: str
    bf16_autocast: bool  # the forward pass (and so the loss) under bf16 autocast
    channels_last: bool  # the model and every batch in channels_last memory format
    resident_dtype: torch.dtype  # of the prepared, augmented-on-device training set
    cudnn_benchmark: bool  # let cuDNN pick the fastest kernels for the fixed shapes (CUDA only)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format


NUMERICS = {
    "cuda": Numerics("cuda", bf16_autocast=True, channels_last=True, resident_dtype=torch.bfloat16,
                     cudnn_benchmark=True),
    "fp32": Numerics("fp32", bf16_autocast=False, channels_last=False, resident_dtype=torch.float32,
                     cudnn_benchmark=False),
}


def resolve_numerics(numerics: str | Numerics, device: torch.device) -> Numerics:
    """The Numerics meant: "auto" is "cuda" on a CUDA device and "fp32" elsewhere; a name picks
    that setting on any device."""
    if isinstance(numerics, Numerics):
        return numerics
    if numerics == "auto":
        return NUMERICS["cuda" if device.type == "cuda" else "fp32"]
    if numerics not in NUMERICS:
        raise UserError(f"numerics {numerics!r} is not auto, {' or '.join(NUMERICS)}")
    return NUMERICS[numerics]


def compile_unavailable(device: torch.device) -> str | None:
    """Why torch.compile cannot run on `device` here, or None when it can. On the CPU, inductor
    compiles C++ and so needs a C++ compiler (it looks for $CXX, then g++)."""
    if device.type != "cpu":
        return None
    try:
        compiler = cpp_compiler()
    except Exception as e:  # noqa: BLE001 - inductor raises several kinds when no compiler is found
        return f"torch.compile on the CPU needs a C++ compiler and none was found ({type(e).__name__}: " \
               f"{str(e).splitlines()[0][:120] if str(e) else 'no message'})"
    if not (shutil.which(compiler) or Path(compiler).is_file()):
        return f"torch.compile on the CPU needs a C++ compiler; inductor asks for {compiler!r}, which is not on PATH"
    return None


def portable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights as any device and any consumer can use them: on the CPU, float32 (the
    buffers' own dtypes otherwise), contiguous (a channels_last weight refuses .view and surprises
    whoever reads state_dict.pt), and under the plain module's names (torch.compile's wrapper
    would prefix every key with "_orig_mod.")."""
    model = unwrapped(model)
    return {k: (v.detach().float() if v.is_floating_point() else v.detach()).cpu().contiguous()
            for k, v in model.state_dict().items()}


def learning_rate(recipe: Recipe, step: int, total_steps: int) -> float:
    """The schedule as a function of the step (0-based) within total_steps."""
    t = step / total_steps
    if recipe.schedule == "constant":
        return recipe.lr
    if recipe.schedule == "multistep":  # applied per epoch, as the report's MultiStepLR did
        epoch = int(t * recipe.epochs)
        passed = sum(epoch >= round(m * recipe.epochs) for m in recipe.milestones)
        return recipe.lr * recipe.gamma**passed
    if recipe.warmup and t < recipe.warmup:  # onecycle and cosine rise linearly from lr / 10
        return recipe.lr * (0.1 + 0.9 * t / recipe.warmup)
    rest = (t - recipe.warmup) / (1 - recipe.warmup)
    if recipe.schedule == "onecycle":
        return recipe.lr * (1 - rest)
    return recipe.lr * 0.5 * (1 + math.cos(math.pi * rest))  # cosine


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    if recipe.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                           nesterov=recipe.nesterov and recipe.momentum > 0, weight_decay=recipe.weight_decay)


@torch.no_grad()
def evaluate(model: nn.Module, split: ImageSet, description: DataDescription, device: torch.device,
             flip_tta: bool = False, batch_size: int = 1000, numerics: str | Numerics = "auto") -> float:
    """Accuracy in [0, 1] on a split of uint8 images, normalised as `description` says; with
    flip_tta, logits of the image and its mirror are summed. numerics as train()'s: "auto"
    computes in bf16 on CUDA and in float32 on the CPU."""
    images, labels = split.images, split.labels
    numerics = resolve_numerics(numerics, device)
    model.eval()
    correct = 0
    for start in range(0, len(labels), batch_size):
        x = description.normalize(images[start:start + batch_size].to(device, non_blocking=True))
        x = x.contiguous(memory_format=numerics.memory_format)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=numerics.bf16_autocast):
            logits = model(x).float()
            if flip_tta:
                logits += model(x.flip(-1)).float()
        correct += (logits.argmax(1) == labels[start:start + batch_size].to(device)).sum().item()
    return correct / len(labels)


@dataclass
class Epoch:
    epoch: int  # 1-based
    val_acc: float | None  # None when the run does not validate (validate=False)
    loss: float  # mean training loss
    seconds: float  # the whole epoch: training and the validation pass
    images_per_s: float  # training images per second of the training steps alone
    lr: float


@dataclass
class TrainResult:
    history: list[Epoch] = field(default_factory=list)
    best_val_acc: float = 0.0
    best_epoch: int = 0
    resumed_from: int = 0  # the epoch a checkpoint had completed, 0 for a fresh start
    device: str = "cpu"
    numerics: str = "fp32"  # the name of the Numerics it trained under

    @property
    def epochs_done(self) -> int:
        return self.history[-1].epoch if self.history else 0


EpochCallback = Callable[[Epoch], None]


def _checkpoint_identity(spec: ResNetSpec, recipe: Recipe, seed: int) -> dict:
    return {"spec": spec.to_dict(), "recipe": recipe.to_dict(), "seed": seed}


def load_checkpoint(path) -> dict:
    """A checkpoint's contents, read with weights_only: tensors, numbers, strings, lists and dicts
    only. A file naming anything else (a class, a function: what a crafted file uses to run code)
    raises UnsafeFile; a torn or foreign file raises what torch raises for it."""
    state = load_plain(path, "checkpoint")
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise ValueError(f"{path} is not a checkpoint of resnet-search (no model weights)")
    return state


def load_weights(path) -> dict:
    """The model's state dict from a checkpoint written by train() (best.pt or last.pt)."""
    return load_checkpoint(path)["model"]


def load_model(spec: ResNetSpec, path) -> torch.nn.Module:
    """The network of a checkpoint written by train(), on the CPU, in eval mode."""
    model = build_model(spec)
    model.load_state_dict(load_weights(path))
    return model.eval()


def completed_epochs(checkpoint_dir, spec: ResNetSpec, recipe: Recipe, seed: int) -> list[Epoch]:
    """The epochs a resumable checkpoint of this very run holds (none if there is none)."""
    state = resumable_state(checkpoint_dir, spec, recipe, seed)
    return [Epoch(**e) for e in state["history"]] if state else []


def resumable_state(checkpoint_dir, spec: ResNetSpec, recipe: Recipe, seed: int) -> dict | None:
    """The last epoch's checkpoint in checkpoint_dir if it belongs to this very run and holds a
    whole run's state, else None (a torn or foreign file starts the run over). One that names code
    to run is refused (UnsafeFile), never loaded."""
    last = Path(checkpoint_dir) / "last.pt"
    if not last.exists():
        return None
    try:
        state = load_checkpoint(last)
    except UnsafeFile:
        raise
    except Exception:  # noqa: BLE001 - a torn or foreign file: start over rather than crash
        return None
    if state.get("identity") != _checkpoint_identity(spec, recipe, seed) or not _whole_run_state(state):
        return None
    return state


def _whole_run_state(state: dict) -> bool:
    """Whether a last.pt holds everything a resume reads, of the right kinds."""
    epoch_keys = {f.name for f in fields(Epoch)}
    history = state.get("history")
    return (isinstance(state.get("optimizer"), dict) and isinstance(history, list)
            and all(isinstance(e, dict) and set(e) == epoch_keys for e in history)
            and isinstance(state.get("best_val_acc"), (int, float)) and isinstance(state.get("best_epoch"), int))


def train(spec: ResNetSpec, data: Dataset, recipe: Recipe, *, device: str | torch.device = "auto", seed: int = 0,
          on_epoch: EpochCallback | None = None, checkpoint_dir=None, progress=None, label: str = "epochs",
          compile: bool = False, validate: bool = True, numerics: str | Numerics = "auto",
          interruptible: Callable[[], ContextManager] = contextlib.nullcontext) -> TrainResult:
    """Train `spec` under `recipe`; return per-epoch validation accuracy and the best epoch.

    checkpoint_dir: where `last.pt` (every epoch; a run resumes from it when spec, recipe and
    seed match) and `best.pt` (the best validation epoch's weights) are written.
    validate=False: no validation pass and nothing selected (retraining on train + validation
    with no held-out split): data.val is never read, each Epoch's val_acc is None, no best.pt is
    written and the result's best epoch is the last; the final weights are last.pt's.
    on_epoch(Epoch) runs after each epoch; whatever it raises (a
    pruning signal, say) ends the run after that epoch's checkpoint is written.
    progress: the caller's rich Progress (anything with its add_task, update and remove_task) to
    add the epoch bar (named `label`) to, or None for none; the engine draws nothing itself.
    numerics: "auto" (CUDA's settings on a CUDA device, float32 on the CPU), "cuda", "fp32" or a
    Numerics; see Numerics. compile: torch.compile the training step (on the CPU it needs a C++
    compiler: compile_unavailable says whether one is there).
    interruptible(): the context each epoch's computation runs in, and nothing else: the search
    raises Ctrl-C at once only there, never midway through a checkpoint or what on_epoch records.
    """
    check_shape(spec, data.description, f"network {spec.summary()}")
    device = resolve_device(device) if isinstance(device, str) else device
    numerics = resolve_numerics(numerics, device)
    if device.type == "cuda" and numerics.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest kernels
    if compile and (why := compile_unavailable(device)):
        raise DeviceError(why)
    torch.manual_seed(seed)
    steps = Steps.prepare(spec, data, recipe, device, numerics, compile)
    result = TrainResult(device=str(device), numerics=numerics.name)
    files = None
    if checkpoint_dir is not None:
        files = Checkpoints(Path(checkpoint_dir), _checkpoint_identity(spec, recipe, seed), numerics.name)
        files.resume(steps, result, spec, recipe, seed)

    task = progress.add_task(label, total=recipe.epochs, completed=result.epochs_done, info="") if progress else None
    after_step = (lambda: progress.update(task, advance=1 / steps.per_epoch)) if progress else (lambda: None)
    try:
        for epoch in range(result.epochs_done + 1, recipe.epochs + 1):
            start = time.perf_counter()
            with interruptible():
                mean_loss, lr, train_seconds = steps.epoch(epoch, seed, after_step)
                if not math.isfinite(mean_loss):
                    raise Diverged(f"training loss became {mean_loss} in epoch {epoch} (lr {lr:.3g}); "
                                   "lower the learning rate")
                val_acc = evaluate(steps.model, data.val, data.description, device, recipe.flip_tta,
                                   numerics=numerics) if validate else None
            record = Epoch(epoch, val_acc, mean_loss, time.perf_counter() - start,
                           steps.per_epoch * steps.batch / train_seconds, lr)
            result.history.append(record)
            improved = validate and (val_acc > result.best_val_acc or result.best_epoch == 0)
            if improved:
                result.best_val_acc, result.best_epoch = val_acc, epoch
            elif not validate:
                result.best_epoch = epoch  # no selection: the final epoch is the result
            if files is not None:
                files.save(steps, result, improved)
            if progress:
                progress.update(task, completed=epoch, info=f"{record.images_per_s:,.0f} img/s  loss {mean_loss:.3f}"
                                + ("" if val_acc is None else f"  val {val_acc:.2%}"))
            if on_epoch is not None:
                on_epoch(record)
    finally:
        if progress:
            progress.remove_task(task)
    return result


@dataclass
class Steps:
    """What the training steps of one run share: the model (and the compiled step model), its
    optimizer and loss, the training set prepared once on the device, and the step counts."""

    model: nn.Module
    step_model: nn.Module  # the model, or torch.compile's wrapper of it
    optimizer: torch.optim.Optimizer
    criterion: nn.Module
    recipe: Recipe
    numerics: Numerics
    device: torch.device
    train_set: TrainingSet
    labels: torch.Tensor
    batch: int
    per_epoch: int  # steps per epoch: the ragged last batch is dropped, so BN and step timing stay uniform

    @classmethod
    def prepare(cls, spec: ResNetSpec, data: Dataset, recipe: Recipe, device: torch.device, numerics: Numerics,
                compile: bool) -> "Steps":
        model = build_model(spec).to(device, memory_format=numerics.memory_format)
        optimizer = make_optimizer(model, recipe)
        criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
        # Prepared once, resident on the device (bf16 on CUDA: half the memory traffic per step).
        train_set = TrainingSet(data.train.images.to(device), recipe, data.description, numerics.resident_dtype)
        labels = data.train.labels.to(device)
        batch = min(recipe.batch_size, len(labels))
        return cls(model, torch.compile(model) if compile else model, optimizer, criterion, recipe, numerics, device,
                   train_set, labels, batch, len(labels) // batch)

    def epoch(self, epoch: int, seed: int, after_step) -> tuple[float, float, float]:
        """One epoch of steps: (mean training loss, the last learning rate, seconds)."""
        recipe, numerics, device = self.recipe, self.numerics, self.device
        # Order and augmentation depend only on (seed, epoch): a resumed run repeats them exactly.
        gen = torch.Generator(device=device).manual_seed(seed * 100_003 + epoch)
        self.model.train()
        start = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        order = torch.randperm(len(self.labels), generator=gen, device=device)
        lr, total_steps = recipe.lr, self.per_epoch * recipe.epochs
        for step in range(self.per_epoch):
            index = order[step * self.batch:(step + 1) * self.batch]
            x = self.train_set.batch(index, gen).contiguous(memory_format=numerics.memory_format)
            lr = learning_rate(recipe, (epoch - 1) * self.per_epoch + step, total_steps)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=numerics.bf16_autocast):
                loss = self.criterion(self.step_model(x), self.labels[index])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            loss_sum += loss.detach()
            after_step()
        mean_loss = loss_sum.item() / self.per_epoch  # also waits for the device to finish
        return mean_loss, lr, time.perf_counter() - start


@dataclass
class Checkpoints:
    """A run's checkpoint folder: last.pt after every epoch (what a run of the same identity
    resumes from), best.pt at each new best validation epoch."""

    folder: Path
    identity: dict  # spec, recipe and seed: a last.pt of another identity is never resumed
    numerics: str

    def resume(self, steps: Steps, result: TrainResult, spec: ResNetSpec, recipe: Recipe, seed: int) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        state = resumable_state(self.folder, spec, recipe, seed)
        if state is not None:
            steps.model.load_state_dict(state["model"])
            steps.optimizer.load_state_dict(state["optimizer"])
            result.history = [Epoch(**e) for e in state["history"]]
            result.best_val_acc, result.best_epoch = state["best_val_acc"], state["best_epoch"]
            result.resumed_from = result.epochs_done

    def save(self, steps: Steps, result: TrainResult, improved: bool) -> None:
        weights = portable_state_dict(steps.model)
        if improved:
            _save(self.folder / "best.pt", {"identity": self.identity, "model": weights, "epoch": result.epochs_done,
                                            "val_acc": result.best_val_acc, "numerics": self.numerics})
        _save(self.folder / "last.pt", {"identity": self.identity, "model": weights,
                                        "optimizer": steps.optimizer.state_dict(),
                                        "history": [asdict(e) for e in result.history],
                                        "best_val_acc": result.best_val_acc, "best_epoch": result.best_epoch,
                                        "numerics": self.numerics})


def _save(path: Path, state: dict) -> None:
    save_atomic(path, lambda tmp: torch.save(state, tmp))


def cpu_estimate(spec: ResNetSpec, recipe: Recipe, *, train_images: int, epochs: int, eval_images: int) -> str:
    """How long training `spec` under `recipe` would take on this CPU: `epochs` over `train_images`,
    and `eval_images` evaluated in all (validation passes, the test), as "about N min"."""
    seconds = cpu_seconds(spec, recipe, train_images=train_images, epochs=epochs, eval_images=eval_images)
    took = (f"{seconds / 3600:,.0f} h" if seconds >= 36000 else f"{seconds / 3600:.1f} h" if seconds >= 5400
            else f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s")
    return f"about {took} on this CPU (its training step timed here)"


def cpu_seconds(spec: ResNetSpec, recipe: Recipe, *, train_images: int, epochs: int, eval_images: int) -> float:
    """Seconds to train and evaluate `spec` on this CPU, from its own training step and evaluation
    batch timed here (the fastest of three after a warm-up: other jobs make the slower ones
    wander). A count of MACs alone misjudges small networks by 10x: their deep, narrow layers run
    far below the processor's peak. A large network is timed on a smaller batch (about 8 GMAC a
    step; smaller batches run slower per image), so that the estimate takes seconds, not minutes."""
    model = build_model(spec)
    optimizer = make_optimizer(model, recipe)
    batch = min(recipe.batch_size, max(train_images, 1))
    probe = min(batch, 2 ** max(4, int(math.log2(max(8e9 / count(spec).macs, 1)))))
    x = torch.randn(probe, spec.in_channels, spec.image_side, spec.image_side)
    y = torch.randint(0, spec.classes, (probe,))

    def step():
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    def forward():
        with torch.no_grad():
            for _ in range(2 if recipe.flip_tta else 1):
                model(x)

    model.train()
    train_s = _fastest(step) / probe
    model.eval()
    eval_s = _fastest(forward) / probe
    trained = max(train_images // batch, 1) * batch  # the ragged last batch is dropped, as Steps does
    return epochs * trained * train_s + eval_images * eval_s


def _fastest(run: Callable[[], None], repeats: int = 3) -> float:
    run()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return min(seconds)
