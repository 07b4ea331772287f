"""The GPU measurements for Model 1 on the JPEG copy of CIFAR-10; made for a CUDA device.

    python benchmarks/gpu.py                                  # all sections; prints one JSON object
    python benchmarks/gpu.py --out-dir "$OUT"                 # results where a cut-off run still returns them
    python benchmarks/gpu.py --only epoch                     # (a) seconds per epoch, eager and compiled
    python benchmarks/gpu.py --only paper --time-limit 480    # (b) rerun the same command to continue
    python benchmarks/gpu.py --only fast                      # (c) target: (b)'s accuracy in the --out file

Sections:
  epoch  Model 1 under the fast recipe of studies/default.toml: seconds per epoch with and
         without torch.compile (the first epoch, which pays for compilation and cuDNN autotuning,
         is reported apart from the steady ones).
  paper  The report's recipe (studies/paper.toml, first choices, 200 epochs) on Model 1, then
         the final-epoch model's TEST accuracy.
  fast   The fast recipe for increasing epoch counts (--fast-epochs), each run from scratch since
         its schedule depends on the count, until one reaches the paper section's test accuracy.
A study file's range is read as its geometric mean (log ranges) or midpoint, a list as its first choice.

The results JSON is named by the device and torch's version (results/<gpu name>-torch<version>.json;
cpu-<processor>-torch<version>.json on a CPU, with -cuda-numerics appended where --numerics is not the
device's own) and written as the run goes: the setup before any
training, a run's progress after each of its epochs, each section when it ends. A run cut off by
the command limit so leaves everything up to its last finished epoch in the file.

The same code runs end to end on a CPU, tiny, through the engine's CUDA numerics (bf16 autocast,
channels_last, the bf16 resident training set). torch.compile there needs a C++ compiler: without
one the epoch section records why its compiled timing was skipped and --compile is refused.

    python benchmarks/gpu.py --device cpu --numerics cuda --model small --limit-train 1024 --val-size 256 \
        --epoch-epochs 2 --paper-epochs 2 --fast-epochs 1,2 --out-dir /tmp/gpu-cpu

Long runs survive the 10-minute command limit of a lent GPU: training checkpoints every epoch
under --checkpoints, --time-limit stops after the epoch that crosses it, and the finished runs
are kept in the --out JSON, so rerunning the same command resumes where it stopped. A run's
seconds are the sum of its epochs' (each covering its steps and its validation pass), which a
resume does not disturb; data loading, model building and the test evaluation are not in them.

Not run yet (no GPU was lent to the sessions that built it); docs/measurements.md is where its
numbers go, beside the commands above, once the --out file is committed.
"""

import argparse
import json
import math
import platform
import re
import shlex
import shutil
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from common import SMALL, default_data
from resnet_space import MODEL_1, Recipe
from resnet_space.errors import UserError
from resnet_space.space import StudyFile
from search.engine.data import DataError, load_data
from search.engine.files import save_atomic
from search.engine.train import (NUMERICS, completed_epochs, compile_unavailable, evaluate, load_model, resolve_device,
                          resolve_numerics, train)

REPO = Path(__file__).resolve().parent.parent
SECTIONS = ("epoch", "paper", "fast")
MODELS = {"model1": MODEL_1, "small": SMALL}  # small: for a quick end-to-end run on a CPU


class TimeUp(Exception):
    """Raised from the epoch callback: train() writes that epoch's checkpoint, then stops."""


def study_recipe(name: str) -> Recipe:
    return StudyFile.load(REPO / "studies" / name).center_recipe()[0]


def sanitise(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+_-]+", "-", text).strip("-")


def processor_name() -> str:
    """The CPU's model name as /proc/cpuinfo gives it, else platform's guess."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def device_name(device: torch.device) -> str:
    """What the results file is named by: the GPU's name, or "cpu-" and the processor's."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu-{processor_name()}"


class Bench:
    def __init__(self, args, data, out: Path, device: torch.device):
        self.args, self.data, self.out, self.device = args, data, out, device
        self.model = MODELS[args.model]
        self.numerics = resolve_numerics(args.numerics, device)
        self.command = shlex.join(sys.orig_argv)
        self.deadline = time.monotonic() + args.time_limit if args.time_limit is not None else math.inf
        # A previous run's results are kept and extended, so sections can run in separate commands.
        self.results = json.loads(out.read_text()) if out.exists() else {}
        # A finished run is reused only when it ran this very setup.
        self.setup = {"model": self.model.summary(), "device": device.type, "numerics": self.numerics.name,
                      "train_images": len(data.train), "val_images": len(data.val)}

    def save(self) -> None:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        save_atomic(self.out, lambda tmp: tmp.write_text(json.dumps(self.results, indent=2) + "\n"))

    def run(self, label: str, recipe: Recipe, *, compile: bool, checkpoint: Path | None = None, on_history=None):
        """Train the model; (history as dicts, whether it finished). Progress lines go to stderr;
        on_history(history so far, resumed epochs included) runs after each epoch."""
        history = [vars(e) for e in completed_epochs(checkpoint, self.model, recipe, 0)] if checkpoint else []

        def on_epoch(e):
            print(f"{label}: epoch {e.epoch}/{recipe.epochs}  val {e.val_acc:.4f}  loss {e.loss:.3f}  {e.seconds:.1f}s",
                  file=sys.stderr, flush=True)
            history.append(vars(e))
            if on_history is not None:
                on_history(history)
            if checkpoint is not None and time.monotonic() > self.deadline:
                raise TimeUp  # only a checkpointed run can stop early and resume

        try:
            train(self.model, self.data, recipe, device=self.device, progress=False, compile=compile,
                  checkpoint_dir=checkpoint, on_epoch=on_epoch, numerics=self.numerics)
        except TimeUp:
            pass
        return history, len(history) == recipe.epochs

    def test_accuracy(self, checkpoint: Path, recipe: Recipe) -> float:
        """The final epoch's weights (last.pt), not the best validation epoch's, on the test split,
        under the numerics it trained with."""
        model = load_model(self.model, checkpoint / "last.pt").to(self.device,
                                                                  memory_format=self.numerics.memory_format)
        return evaluate(model, self.data.test, self.data.description, self.device, recipe.flip_tta,
                        numerics=self.numerics)

    def trained(self, name: str, recipe: Recipe) -> dict:
        """One full run with its test accuracy, reused from the results file when already finished."""
        done = self.results.get("runs", {}).get(name)
        if (done and done.get("complete") and done["recipe"] == recipe.to_dict() and done.get("setup") == self.setup
                and done.get("compile") == self.args.compile):
            return done
        checkpoint = Path(self.args.checkpoints) / name

        def entry(history, complete, test_acc=None):
            return {
                "recipe": recipe.to_dict(),
                "setup": self.setup,
                "compile": self.args.compile,
                "complete": complete,
                "epochs_done": len(history),
                "seconds": round(sum(e["seconds"] for e in history), 1),
                "final_val_acc": history[-1]["val_acc"] if history else None,
                "test_acc": test_acc,
                "test_flip_tta": recipe.flip_tta,
                "command": self.command,
            }

        def progress(history):  # what a cut-off run leaves: every finished epoch
            self.results.setdefault("runs", {})[name] = entry(history, False)
            self.save()

        history, complete = self.run(name, recipe, compile=self.args.compile, checkpoint=checkpoint,
                                     on_history=progress)
        done = entry(history, complete, self.test_accuracy(checkpoint, recipe) if complete else None)
        self.results.setdefault("runs", {})[name] = done
        self.save()
        if complete and not self.args.keep_checkpoints:
            shutil.rmtree(checkpoint, ignore_errors=True)  # Model 1's checkpoints are ~60 MB a run
        return done

    def epoch(self) -> None:
        recipe = replace(study_recipe("default.toml"), epochs=self.args.epoch_epochs)
        section = {"recipe": recipe.to_dict(), "setup": self.setup, "command": self.command, "complete": False,
                   "note": "epoch seconds include the validation pass (with the recipe's flip TTA)"}
        self.results["epoch"] = section  # saved as each timing ends: a cut-off run keeps the eager one
        variants = [False, True]
        if why := compile_unavailable(self.device):
            variants, section["compiled"] = [False], {"skipped": why}
        for compiled in variants:
            history, _ = self.run(f"epoch compile={compiled}", recipe, compile=compiled)
            steady = history[1:]
            section["compiled" if compiled else "eager"] = {
                "first_epoch_s": round(history[0]["seconds"], 2),
                "epoch_s": round(statistics.median(e["seconds"] for e in steady), 2),
                "images_per_s": round(statistics.median(e["images_per_s"] for e in steady)),
            }
            self.save()
        if "epoch_s" in section["compiled"]:
            section["compile_speedup"] = round(section["eager"]["epoch_s"] / section["compiled"]["epoch_s"], 2)
        section["complete"] = True
        self.save()

    def paper(self) -> None:
        recipe = study_recipe("paper.toml")
        recipe = replace(recipe, epochs=self.args.paper_epochs) if self.args.paper_epochs else recipe
        entry = self.trained(f"paper-{self.args.model}", recipe)
        self.results["paper"] = {"test_acc": entry["test_acc"], "complete": entry["complete"],
                                 "epochs_done": entry["epochs_done"], "seconds": entry["seconds"]}
        self.save()

    def fast(self) -> None:
        target = self.args.target if self.args.target is not None else self.results.get("paper", {}).get("test_acc")
        paper = self.results.get("paper")
        if target is None and paper and not paper["complete"]:
            print(f"gpu.py: the fast section waits for the paper run ({paper['epochs_done']} epochs done); "
                  "rerun the same command to continue it", file=sys.stderr)
            return
        if target is None:
            sys.exit("gpu.py: the fast section needs the paper recipe's test accuracy: "
                     "run --only paper first (same --out) or pass --target ACC")
        base = study_recipe("default.toml")
        section = {"target_test_acc": target, "tried": [], "reached": None, "complete": True}
        for epochs in self.args.fast_epochs:
            if time.monotonic() > self.deadline:
                section["complete"] = False
                break
            entry = self.trained(f"fast-{self.args.model}-e{epochs}", replace(base, epochs=epochs))
            section["tried"].append({"epochs": epochs, "test_acc": entry["test_acc"], "seconds": entry["seconds"]})
            self.results["fast"] = section
            self.save()
            if not entry["complete"]:
                section["complete"] = False
                break
            if entry["test_acc"] >= target:
                section["reached"] = {"epochs": epochs, "seconds": entry["seconds"], "test_acc": entry["test_acc"]}
                break
        self.results["fast"] = section
        self.save()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("--data", default=default_data(), help="CIFAR-10 image folder (default: $RESNET_SEARCH_DATA "
                        "or ../shared/datasets/cifar10-jpeg from the repo root)")
    parser.add_argument("--out", help="results JSON (default: <out-dir>/<gpu-name>-torch<version>.json)")
    parser.add_argument("--out-dir", default=str(REPO / "results"),
                        help="folder of the results JSON, named by device and torch version (default: results/)")
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu (a tiny end-to-end check)")
    parser.add_argument("--numerics", default="auto", choices=("auto", *NUMERICS),
                        help="the engine's numeric settings: auto (CUDA's on a GPU, fp32 on a CPU), cuda (bf16 "
                             "autocast, channels_last, bf16 training set: on a CPU too) or fp32")
    parser.add_argument("--model", default="model1", choices=MODELS,
                        help="model1 (default), or small (N3 B2-2-2 C16-32-64) for a quick run on a CPU")
    parser.add_argument("--limit-train", type=int, help="train on this many images (default: all)")
    parser.add_argument("--paper-epochs", type=int, help="epochs of the paper run (default: the study file's, 200)")
    parser.add_argument("--only", choices=SECTIONS, action="append", help="run only this section (repeatable)")
    parser.add_argument("--checkpoints", help="checkpoint folder (default: results/checkpoints/<out name>)")
    parser.add_argument("--keep-checkpoints", action="store_true", help="keep a finished run's checkpoints")
    parser.add_argument("--time-limit", type=float, help="seconds; stop after the epoch that crosses it")
    parser.add_argument("--compile", action="store_true", help="torch.compile in the paper and fast runs")
    parser.add_argument("--epoch-epochs", type=int, default=3, help="epochs per timing in the epoch section")
    parser.add_argument("--fast-epochs", default="10,15,20,30,40",
                        type=lambda s: [int(x) for x in s.split(",")], help="epoch counts to try, in order")
    parser.add_argument("--target", type=float, help="test accuracy in [0, 1] for the fast section")
    parser.add_argument("--val-size", type=int, default=5000)
    args = parser.parse_args()
    if args.epoch_epochs < 2:
        parser.error("--epoch-epochs must be at least 2: the first epoch is reported apart")

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit(f"gpu.py: no CUDA device on this machine (torch {torch.__version__}); run it where a GPU is lent, "
                 "or pass --device cpu with tiny sizes (see --help) to check it end to end")
    try:
        device = resolve_device(args.device)
        if args.compile and (why := compile_unavailable(device)):
            sys.exit(f"gpu.py: {why}")
    except UserError as e:
        sys.exit(f"gpu.py: {e}")

    name = device_name(device)
    # Numerics other than the device's own are named too: their runs never mix with the default's.
    numerics = resolve_numerics(args.numerics, device)
    other = "" if numerics is resolve_numerics("auto", device) else f"-{numerics.name}-numerics"
    out = Path(args.out or Path(args.out_dir) / f"{sanitise(name)}-torch{sanitise(torch.__version__)}{other}.json")
    args.checkpoints = args.checkpoints or str(out.parent / "checkpoints" / out.stem)
    try:
        data = load_data(args.data, val_size=args.val_size, limit_train=args.limit_train, download=False)
    except DataError as e:
        sys.exit(f"gpu.py: {e}")

    bench = Bench(args, data, out, device)
    bench.results.update({
        "dataset": "CIFAR-10 (JPEG q75 copy)" if "JPEG" in data.name else data.name,
        "data": data.description.root,
        "split": {"train": len(data.train), "val": len(data.val), "test": len(data.test)},
        "model": bench.model.summary(),
        "device": str(device),
        "gpu" if device.type == "cuda" else "cpu": name if device.type == "cuda" else processor_name(),
        "numerics": bench.numerics.name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "command": bench.command,
    })
    bench.save()  # the setup, before anything is trained
    for section in args.only or SECTIONS:
        getattr(bench, section)()
    bench.save()
    print(json.dumps(bench.results))


if __name__ == "__main__":
    main()
