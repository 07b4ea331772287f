"""Does data work slow training? The engine's data work per batch as a share of the training step's time.

    python benchmarks/data_path.py                   # batch 512, CPU, median of 3; last line: one JSON object
    python benchmarks/data_path.py --repeats 1 --batch 32 --limit-train 2000 --batches 20 --small-steps 1 --steps 1 --warmup 0

Data work (timed over --batches batches per run): what search.engine.train.train's loop does for each
batch before the model sees it, with the fast recipe of studies/default.toml (crop padding 4,
flip): the epoch's shuffled order (torch.randperm, drawn once per epoch and counted in the
epoch's batches as it is there), the batch's slice of it, TrainingSet.batch (crop, flip and
normalisation as one gather) and the labels' gather; on CUDA also the channels_last copy.
The training set is prepared once, as train() does; that one-off cost is reported apart.

Training step (timed over --small-steps and --steps steps per run, after --warmup untimed ones
once), for the small network (N3 B2-2-2 C16-32-64 F3 k1 P4) and for Model 1 (4,976,426
parameters; seconds per step at batch 512 on a CPU, hence few steps): train()'s step
with the data work left out: the learning rate set, forward, loss (label smoothing as the
recipe's), zero_grad, backward, the optimizer step (Nesterov SGD) and the loss summed on the
device, over one batch prepared beforehand.

share_pct = data / (data + step): the part of a training step's time the data work would
take if nothing overlapped them, from the medians of the two.

docs/measurements.md quotes the line and table this printed on the development machine, with its
command; the CUDA share has not been measured yet.
"""

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from resnet_space import MODEL_1
from resnet_space.model import build_model
from resnet_space.space import StudyFile
from common import REPO, SMALL, add_measure_args, begin, default_data, machine_load, repeat
from search.engine.data import Dataset, ImageSet, TrainingSet, load_data
from search.study.layout import DEFAULT_VAL_SIZE
from search.engine.train import learning_rate, make_optimizer, resolve_device

NETWORKS = {"small": SMALL, "model1": MODEL_1}


def source_images(data: Path, limit_train: int | None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The training split a search trains on (45,000 images, or --limit-train of them); random
    uint8 images of that size where no data is found."""
    if data.exists():
        d = load_data(data, limit_train=limit_train, val_size=DEFAULT_VAL_SIZE)
        return d.train.images, d.train.labels, f"{d.name}, {len(d.train)} training images"
    n = limit_train or 45_000
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen)
    return images, torch.randint(0, 10, (n,), generator=gen), f"synthetic uint8, {n} images (no data found)"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()  # kernels are asynchronous: wait for the last before stopping the clock


def data_ms(train_set: TrainingSet, labels: torch.Tensor, batch: int, device: torch.device, batches: int):
    """A function that returns ms of data work per batch over `batches` batches, as train() does it."""
    n = len(labels)
    steps_per_epoch = n // batch
    gen = torch.Generator(device=device).manual_seed(0)
    state = {"step": 0, "order": None}

    def one_batch():
        step = state["step"] % steps_per_epoch
        if step == 0:  # a new epoch: train() draws its order once, then slices it
            state["order"] = torch.randperm(n, generator=gen, device=device)
        state["step"] += 1
        index = state["order"][step * batch:(step + 1) * batch]
        x = train_set.batch(index, gen)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        return x, labels[index]

    for _ in range(3):  # warm-up: allocator, caches
        one_batch()
    sync(device)

    def measure() -> float:
        start = time.perf_counter()
        for _ in range(batches):
            one_batch()
        sync(device)
        return (time.perf_counter() - start) / batches * 1000

    return measure, one_batch


def step_ms(spec, recipe, x: torch.Tensor, y: torch.Tensor, device: torch.device, steps: int, warmup: int):
    """A function that returns ms per training step over `steps` steps: train()'s step on one
    batch prepared beforehand, so no data work is inside. The model is built and warmed once."""
    cuda = device.type == "cuda"
    torch.manual_seed(0)
    model = build_model(spec).to(device, memory_format=torch.channels_last if cuda else torch.contiguous_format)
    optimizer = make_optimizer(model, recipe)
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    model.train()
    loss_sum = torch.zeros((), device=device)
    total_steps = 1000  # only shapes the learning rate, whose value does not change the arithmetic

    def one_step(step: int):
        lr = learning_rate(recipe, step % total_steps, total_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = criterion(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum.add_(loss.detach())

    for step in range(warmup):  # warm-up: allocator, cuDNN's kernel choice
        one_step(step)
    sync(device)

    def measure() -> float:
        start = time.perf_counter()
        for step in range(steps):
            one_step(step)
        sync(device)
        return (time.perf_counter() - start) / steps * 1000

    return measure


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=default_data())
    parser.add_argument("--limit-train", type=int, default=None,
                        help="training images to prepare (default: the whole 45,000-image training split)")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    parser.add_argument("--batches", type=int, default=200, help="timed batches of data work per run")
    parser.add_argument("--steps", type=int, default=2, help="timed training steps of Model 1 per run")
    parser.add_argument("--small-steps", type=int, default=5, help="timed training steps of the small network per run")
    parser.add_argument("--warmup", type=int, default=1, help="untimed training steps per network, once")
    add_measure_args(parser)
    args = parser.parse_args()

    before = begin(args)
    device = resolve_device(args.device)
    recipe, _ = StudyFile.load(REPO / "studies" / "default.toml").center_recipe()
    recipe = replace(recipe, batch_size=args.batch)
    images, labels, source = source_images(Path(args.data), args.limit_train)
    if args.batch > len(labels):
        raise SystemExit(f"--batch {args.batch} is more than the {len(labels)} training images")

    start = time.perf_counter()
    about = Dataset.of(ImageSet(images, labels), ImageSet(images[:1], labels[:1]), ImageSet(images[:1], labels[:1]),
                       [str(c) for c in range(int(labels.max()) + 1)], source).description
    train_set = TrainingSet(images.to(device), recipe, about, torch.bfloat16 if device.type == "cuda" else torch.float32)
    sync(device)
    prepare_s = time.perf_counter() - start
    labels = labels.to(device)
    measure_data, one_batch = data_ms(train_set, labels, args.batch, device, args.batches)
    x, y = one_batch()
    measures = {"data_ms": measure_data}
    steps = {"small": args.small_steps, "model1": args.steps}
    for name, spec in NETWORKS.items():
        measures[f"{name}_step_ms"] = step_ms(spec, recipe, x, y, device, steps[name], args.warmup)
    medians, runs = repeat(measures, args.repeats, digits=2)

    data = medians["data_ms"]
    print(json.dumps({
        "batch": args.batch,
        "data": source,
        "data_ms": data,
        "step_ms": {name: medians[f"{name}_step_ms"] for name in NETWORKS},
        "share_pct": {name: round(100 * data / (data + medians[f"{name}_step_ms"]), 3) for name in NETWORKS},
        "specs": {name: spec.summary() for name, spec in NETWORKS.items()},
        "engine_one_off_prepare_s": round(prepare_s, 3),
        "timed": {"data_batches": args.batches, "steps": steps, "warmup_steps": args.warmup},
        "repeats": args.repeats,
        "runs": runs,
        **machine_load(before, device),
    }))


if __name__ == "__main__":
    main()
