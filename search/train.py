"""The training engine: one code path for CUDA and CPU, whole dataset resident on the device.

Why it is fast (the habits of the fast public CIFAR-10 trainers, airbench and Page's ResNet-9):
- the uint8 dataset lives on the training device and is augmented there in whole batches
  (search/data.py), so no per-sample PIL work or DataLoader workers sit on the hot path;
- on CUDA: bf16 autocast, channels_last, cudnn.benchmark, and torch.compile when asked
  (Numerics below; the CPU can be asked for the same settings, numerics="cuda", which is how
  the tests prove that path without a GPU);
- the learning rate is a pure function of the step, so a resumed run needs no scheduler state;
- the loss is summed on the device and read once per epoch, so steps never wait on the host.
It imports neither optuna nor the CLI: anyone can train a spec with `train(spec, data, recipe)`.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from resnet_space import Recipe, ResNetSpec
from resnet_space.errors import UserError
from resnet_space.model import build_model

from .data import DataDescription, Dataset, ImageSet, TrainingSet, UnsafeFile, check_shape, load_plain
from .layout import save_atomic
from .private import cpp_compiler, unwrapped


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
          on_epoch: EpochCallback | None = None, checkpoint_dir=None, progress=True,
          compile: bool = False, validate: bool = True, numerics: str | Numerics = "auto") -> TrainResult:
    """Train `spec` under `recipe`; return per-epoch validation accuracy and the best epoch.

    checkpoint_dir: where `last.pt` (every epoch; a run resumes from it when spec, recipe and
    seed match) and `best.pt` (the best validation epoch's weights) are written.
    validate=False: no validation pass and nothing selected (retraining on train + validation
    with no held-out split): data.val is never read, each Epoch's val_acc is None, no best.pt is
    written and the result's best epoch is the last; the final weights are last.pt's.
    on_epoch(Epoch) runs after each epoch; whatever it raises (a
    pruning signal, say) ends the run after that epoch's checkpoint is written.
    progress: True for a rich bar, False for none, or a rich Progress to add the bar to.
    numerics: "auto" (CUDA's settings on a CUDA device, float32 on the CPU), "cuda", "fp32" or a
    Numerics; see Numerics. compile: torch.compile the training step (on the CPU it needs a C++
    compiler: compile_unavailable says whether one is there).
    """
    check_shape(spec, data.description, f"network {spec.summary()}")
    device = resolve_device(device) if isinstance(device, str) else device
    numerics = resolve_numerics(numerics, device)
    if device.type == "cuda" and numerics.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest kernels
    if compile and (why := compile_unavailable(device)):
        raise DeviceError(why)
    torch.manual_seed(seed)
    model = build_model(spec).to(device, memory_format=numerics.memory_format)
    optimizer = make_optimizer(model, recipe)
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    step_model = torch.compile(model) if compile else model

    result = TrainResult(device=str(device), numerics=numerics.name)
    identity = _checkpoint_identity(spec, recipe, seed)
    last = best = None
    if checkpoint_dir is not None:
        checkpoint_dir = Path(checkpoint_dir)
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        last, best = checkpoint_dir / "last.pt", checkpoint_dir / "best.pt"
        state = resumable_state(checkpoint_dir, spec, recipe, seed)
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            result.history = [Epoch(**e) for e in state["history"]]
            result.best_val_acc, result.best_epoch = state["best_val_acc"], state["best_epoch"]
            result.resumed_from = result.epochs_done

    # Prepared once, resident on the device (bf16 on CUDA: half the memory traffic per step).
    train_set = TrainingSet(data.train.images.to(device), recipe, data.description, numerics.resident_dtype)
    train_labels = data.train.labels.to(device)
    n = len(train_labels)
    batch = min(recipe.batch_size, n)
    steps_per_epoch = n // batch  # drop the ragged last batch: BN and step timing stay uniform
    total_steps = steps_per_epoch * recipe.epochs

    bar, own_bar, task = _progress(progress, recipe.epochs, result.epochs_done)
    try:
        for epoch in range(result.epochs_done + 1, recipe.epochs + 1):
            # Order and augmentation depend only on (seed, epoch): a resumed run repeats them exactly.
            gen = torch.Generator(device=device).manual_seed(seed * 100_003 + epoch)
            model.train()
            start = time.perf_counter()
            loss_sum = torch.zeros((), device=device)
            order = torch.randperm(n, generator=gen, device=device)
            lr = recipe.lr
            for step in range(steps_per_epoch):
                index = order[step * batch:(step + 1) * batch]
                x = train_set.batch(index, gen).contiguous(memory_format=numerics.memory_format)
                lr = learning_rate(recipe, (epoch - 1) * steps_per_epoch + step, total_steps)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=numerics.bf16_autocast):
                    loss = criterion(step_model(x), train_labels[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += loss.detach()
                if bar is not None:
                    bar.update(task, advance=1 / steps_per_epoch)
            mean_loss = loss_sum.item() / steps_per_epoch  # also waits for the device to finish
            train_seconds = time.perf_counter() - start
            if not math.isfinite(mean_loss):
                raise Diverged(f"training loss became {mean_loss} in epoch {epoch} (lr {lr:.3g}); "
                               "lower the learning rate")
            val_acc = evaluate(model, data.val, data.description, device, recipe.flip_tta,
                               numerics=numerics) if validate else None
            seconds = time.perf_counter() - start
            record = Epoch(epoch, val_acc, mean_loss, seconds, steps_per_epoch * batch / train_seconds, lr)
            result.history.append(record)
            if not validate:
                result.best_epoch = epoch  # no selection: the final epoch is the result
            elif val_acc > result.best_val_acc or result.best_epoch == 0:
                result.best_val_acc, result.best_epoch = val_acc, epoch
                if best is not None:
                    _save(best, {"identity": identity, "model": portable_state_dict(model), "epoch": epoch,
                                 "val_acc": val_acc, "numerics": numerics.name})
            if last is not None:
                _save(last, {"identity": identity, "model": portable_state_dict(model),
                             "optimizer": optimizer.state_dict(), "history": [asdict(e) for e in result.history],
                             "best_val_acc": result.best_val_acc, "best_epoch": result.best_epoch,
                             "numerics": numerics.name})
            if bar is not None:
                bar.update(task, completed=epoch,
                           info=f"{record.images_per_s:,.0f} img/s  loss {mean_loss:.3f}"
                                + ("" if val_acc is None else f"  val {val_acc:.2%}"))
            if on_epoch is not None:
                on_epoch(record)
    finally:
        if own_bar:
            bar.stop()
        elif bar is not None:
            bar.remove_task(task)
    return result


def _save(path: Path, state: dict) -> None:
    save_atomic(path, lambda tmp: torch.save(state, tmp))


def _progress(progress, epochs: int, done: int):
    """(bar, whether we own it, task id) for the epoch bar, or (None, False, None) when off."""
    if progress is False or progress is None:
        return None, False, None
    from .live import progress_bar

    own = progress is True
    bar = progress_bar(transient=True) if own else progress
    if own:
        bar.start()
    task = bar.add_task("epochs", total=epochs, completed=done, info="")
    return bar, own, task


def cpu_estimate_hours(macs_per_image: int, images: int, epochs: int) -> tuple[float, float]:
    """(hours, measured MAC/s) to train on this CPU: about 3x the forward MACs (forward + backward)."""
    conv = torch.nn.Conv2d(64, 64, 3, padding=1)
    x = torch.randn(32, 64, 32, 32)
    seconds = []
    with torch.no_grad():
        conv(x)
        for _ in range(20):  # the fastest of 20 (half a second): other jobs make the slower ones wander
            start = time.perf_counter()
            conv(x)
            seconds.append(time.perf_counter() - start)
    rate = 32 * 64 * 64 * 9 * 32 * 32 / min(seconds)
    return 3 * macs_per_image * images * epochs / rate / 3600, rate
