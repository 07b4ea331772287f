"""The search on real images, as a NAS reviewer would have it measured: per seed, on the JPEG copy of
CIFAR-10, five arms trained on the same split and judged once on the 10,000 test images.

    python benchmarks/search_real.py --seed 0            # one seed's arms, resumable
    python benchmarks/search_real.py --fidelity          # does --trial-images rank as all images do?
    python benchmarks/search_real.py --fidelity --of-study tpe --seed 0   # ... among the specs a search trained
    python benchmarks/search_real.py --noise 3 --seed 0  # each arm's network with training seeds 0-2
    python benchmarks/search_real.py                     # the tables over every seed in OUT

    # the change tried after (ii) lost to (iv): no final stage (`run --finalists 0`), derived from
    # the recorded searches (their trials are the same: the final stage runs after them)
    python benchmarks/search_real.py --finalists 0 --from results/search-real --out results/search-real-no-final-stage --seed 0

    # the pilot (seed 0, before the fidelity was measured): trials on 1,000 images
    python benchmarks/search_real.py --trial-images 1000 --out results/search-real-pilot

Protocol (fixed before any seed ran; each seed's JSON records it and a different one is refused):
- Data: 4,000 training and 2,000 validation images drawn from CIFAR-10's training set (stratified,
  by the seed); the 10,000 test images are used once per network, after its last epoch. (10,000
  and 5,000 would not fit a seed into hours on 2 cores.)
- Final training F: 30 epochs on training + validation images (6,000), the study's recipe, as
  `resnet-search retrain --epochs 30 --seeds 1` does it; every arm's network gets exactly this.
- Arms:
  (i)   baseline: the seeded baseline (Model 1's shape scaled to the budget) trained F;
  (ii)  search: `run` as shipped (TPE, the rung pruner, the final stage of 3 finalists and the
        baseline) with 40 trained trials at the cheap fidelity (--trial-images 2000, 4 epochs),
        then its winner trained F;
  (iii) random: the same with --sampler random;
  (iv)  baseline, equal compute: the baseline trained for as many multiply-accumulates as arm
        (ii) spent in all (search + final stage + F);
  (v)   most MACs: of 40 random draws from the space (the search's own sampler, feasible after
        its repair), the one with the most MACs, trained F.
- Compute, in training-equivalent MACs: a training image costs the network's MACs per image; a
  validation image (two forward passes under flip test-time augmentation, no backward) 2/3 of
  that, since a training step is about three forward passes. From the exact counter, never
  from seconds. Shown as GMAC-epochs per image: the total over the 6,000 images of F.
- Seeds are paired: every arm of seed S uses the same split, data seed and training seed.

Each arm's result is written to OUT/results-seedS.json as it lands; a killed seed resumes where
it stopped (the studies and the retrains resume from their checkpoints). Prints markdown tables,
then one JSON line.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import optuna

from common import default_data
from resnet_space import Budget, ResNetSpec, baseline_spec, count
from resnet_space.space import StudyFile
from resnet_space.spec import spec_from_text
from search.commands.flags import integer_at_least
from search.commands.report.numbers import spearman
from search.commands.retrain import RetrainSettings, retrain
from search.engine.data import find_data
from search.engine.train import train
from search.study import SearchSettings, record, run_search, strategy
from search.study.layout import resolve_space
from search.study.storage import open_storage

ARMS = ("baseline", "search", "random", "baseline, equal compute", "most MACs")
ROMAN = {"baseline": "i", "search": "ii", "random": "iii", "baseline, equal compute": "iv", "most MACs": "v"}
VALIDATION_COST = 2 / 3  # of a training image's, per validation image (flip TTA: two forwards, no backward)


@dataclass(frozen=True)
class Protocol:
    budget: int = 100_000
    space: str = "cpu-1e5"
    train_images: int = 4000
    val_images: int = 2000
    final_epochs: int = 30  # F
    trials: int = 40
    # 2,000 images x 4 epochs ranks 16 random specs as all 4,000 x 8 do with Spearman +0.77 (its top 3
    # hold the best); 1,000 x 4, the pilot's, only +0.13 (docs/measurements.md).
    trial_images: int = 2000
    trial_epochs: int = 4
    finalists: int = 3
    final_stage_epochs: int = 8
    draws: int = 40  # arm (v)

    @property
    def f_images(self) -> int:
        return self.train_images + self.val_images


def quiet(message: str) -> None:
    pass


class SeedRun:
    """One seed's arms, each run once and written to its JSON as it lands."""

    def __init__(self, out: Path, seed: int, protocol: Protocol, data: str, arms=ARMS):
        self.dir, self.seed, self.p, self.data, self.arms = out / f"seed-{seed}", seed, protocol, data, arms
        self.file = out / f"results-seed{seed}.json"
        self.storage = f"sqlite:///{self.dir / 'studies.db'}"
        self.dir.mkdir(parents=True, exist_ok=True)
        found = json.loads(self.file.read_text()) if self.file.exists() else {"protocol": asdict(protocol), "arms": {}}
        if found["protocol"] != asdict(protocol):
            raise SystemExit(f"{self.file} was measured under another protocol: {found['protocol']}")
        self.results = found

    def arm(self, name: str, measure) -> dict:
        if name not in self.results["arms"] and name in self.arms:
            started, load = time.time(), os.getloadavg()[0]
            row = measure()
            row.update(wall_s=round(time.time() - started), load_before=round(load, 2),
                       load_after=round(os.getloadavg()[0], 2))
            with open(self.dir / "results.lock", "w") as lock:  # arms of one seed may run as processes of their own
                fcntl.flock(lock, fcntl.LOCK_EX)
                if self.file.exists():
                    self.results["arms"].update(json.loads(self.file.read_text())["arms"])
                self.results["arms"][name] = row
                self.file.write_text(json.dumps(self.results, indent=1) + "\n")
            print(json.dumps({"seed": self.seed, "arm": name, **{k: v for k, v in row.items() if k != "trials"}}),
                  flush=True)
        return self.results["arms"].get(name)

    def settings(self, sampler: str) -> SearchSettings:
        p = self.p
        return SearchSettings(budget=p.budget, space=p.space, study=sampler, storage=self.storage, trials=p.trials,
                              epochs=p.trial_epochs, device="cpu", data=self.data, limit_train=p.train_images,
                              trial_images=p.trial_images, val_size=p.val_images, seed=self.seed, sampler=sampler,
                              artifacts=self.dir / "artifacts", finalists=p.finalists,
                              final_epochs=p.final_stage_epochs)

    def split_study(self) -> str:
        """A study that holds the seed's split (every study of the seed does), for the arms that train
        a network named, not searched for: the search's; else, its folder lost (the studies are not
        committed, the results are), one made for it whose only trial is the seeded baseline."""
        if "tpe" not in optuna.get_all_study_names(open_storage(self.storage, create=True)):
            run_search(replace(self.settings("tpe"), study="split", trials=1))
            return "split"
        return "tpe"

    def trained_f(self, label: str, study: str | None = None, epochs: int | None = None, seeds: int = 1,
                  **target) -> dict:
        """`retrain --epochs F --seeds 1` of a network of `study` (by default the seed's split study):
        its winner, else the target named."""
        result = retrain(RetrainSettings(study=study or self.split_study(), storage=self.storage,
                                         epochs=epochs or self.p.final_epochs, seeds=seeds, device="cpu",
                                         data=self.data, artifacts=self.dir / "artifacts",
                                         out=self.dir / "retrain" / label, **target), log=quiet)
        macs = count(result.target.spec).macs
        e = result.entry
        return {"network": e["summary"], "params": e["params"], "macs": macs, "epochs": e["epochs"],
                "test_acc": e["mean"], "per_seed": e["test_acc"], "train_macs": macs * e["epochs"] * e["train_images"],
                "train_s": round(sum(s["seconds"] for s in result.seeds), 1)}

    def searched(self, sampler: str) -> dict:
        study = run_search(self.settings(sampler))
        final_stage = record.final_stage(study)  # none with --finalists 0
        trials = record.records(study) + (record.records(final_stage) if final_stage else [])
        spent = sum(search_macs(r, self.p.val_images) for r in trials if r.counts_as_trained)
        _, won = record.winner(study)
        winner = record.TrialRecord.of(won)
        searched = [r for r in record.records(study) if r.counts_as_trained]
        final = self.trained_f(sampler, study=sampler)
        return {**final, "sampler": sampler, "search_macs": spent, "search_s": round(sum(sum(r.seconds) for r in trials), 1),
                "trained": len(searched), "pruned": sum(r.state == "PRUNED" for r in searched),
                "tpe_trials": max(0, len(searched) - strategy.N_STARTUP_TRIALS) if sampler == "tpe" else 0,
                "winner_val_acc": won.value, "winner_is_baseline": winner.baseline,
                "best_searched": max(searched, key=lambda r: r.best_acc).summary,
                "trials": [{"n": r.number, "spec": r.summary, "macs": r.macs, "epochs": len(r.curve),
                            "images": r.train_images, "best": r.best_acc, "state": r.state} for r in trials
                           if r.counts_as_trained]}

    def equal_compute(self, shipped: dict) -> dict:
        spent = shipped["search_macs"] + shipped["train_macs"]
        macs = count(baseline_spec(Budget(self.p.budget))).macs
        epochs = max(1, round(spent / (macs * self.p.f_images)))
        return self.trained_f("baseline-equal-compute", epochs=epochs, baseline=True)

    def most_macs(self) -> dict:
        space = StudyFile.load(resolve_space(self.p.space))
        budget = Budget(self.p.budget)
        draw = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=self.seed))
        specs = [space.sample_spec(draw.ask(), budget) for _ in range(self.p.draws)]
        spec = max(specs, key=lambda s: (count(s).macs, s.summary()))
        spec_file = self.dir / "most-macs-spec.json"
        spec_file.write_text(spec.to_json())
        return self.trained_f("most-macs", spec=str(spec_file))

    def training_noise(self, seeds: int) -> None:
        """Each arm's network (but equal compute's) trained F again with training seeds 0..seeds-1,
        seed 0 being the arm's own run: how much of an arm's test accuracy is its training seed.
        Written to OUT/noise-seedS.json as each arm lands."""
        again = {"search": lambda: self.trained_f("tpe", study="tpe", seeds=seeds),
                 "random": lambda: self.trained_f("random", study="random", seeds=seeds),
                 "baseline": lambda: self.trained_f("baseline", baseline=True, seeds=seeds),
                 "most MACs": lambda: self.trained_f("most-macs", spec=str(self.dir / "most-macs-spec.json"),
                                                     seeds=seeds)}
        file = self.file.with_name(f"noise-seed{self.seed}.json")
        for arm in (a for a in self.arms if a in again and a in self.results["arms"]):
            row = again[arm]()
            with open(self.dir / "results.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                found = json.loads(file.read_text()) if file.exists() else {}
                found[arm] = {"network": row["network"], "test_acc": row["per_seed"]}
                file.write_text(json.dumps(found, indent=1) + "\n")
            print(json.dumps({"seed": self.seed, "arm": arm, **found[arm]}), flush=True)

    def without_final_stage(self, recorded: dict) -> None:
        """This seed's arms under `run --finalists 0`, from `recorded`, its arms measured with a final
        stage under an otherwise equal protocol. The trials are the same (the final stage runs after
        them), so each search's winner is its best trial at the cheap fidelity (of equals, the
        earlier, as `record.ranked` orders them) and its MACs are the trials' alone; F of a network
        another arm of the seed trained F is taken from it (the same split and seeds give the same
        run: seed 0's arms repeated the pilot's exactly); equal compute trains for the new total."""
        for arm in ("baseline", "most MACs"):
            self.arm(arm, lambda: dict(recorded[arm]))
        for arm in ("search", "random"):
            self.arm(arm, lambda: self.best_trial(recorded[arm], recorded))
        if "search" in self.results["arms"]:
            self.arm("baseline, equal compute", lambda: self.equal_compute(self.results["arms"]["search"]))

    def best_trial(self, searched: dict, recorded: dict) -> dict:
        trials = [t for t in searched["trials"] if t["images"] == self.p.trial_images]
        best = min((t for t in trials if t["state"] == "COMPLETE"), key=lambda t: (-t["best"], t["n"]))
        same = next((r for r in recorded.values() if r["network"] == best["spec"] and r["epochs"] == self.p.final_epochs),
                    None)
        if same is None:
            spec_file = self.dir / f"{searched['sampler']}-best-trial-spec.json"
            spec_file.write_text(spec_of(best["spec"]).to_json())
            same = self.trained_f(f"{searched['sampler']}-best-trial", spec=str(spec_file))
        f_keys = ("network", "params", "macs", "epochs", "test_acc", "per_seed", "train_macs", "train_s")
        return {**{k: same[k] for k in f_keys if k in same},  # seeds 0 and 1's first rows have no per_seed
                **{k: searched[k] for k in ("sampler", "trained", "pruned", "tpe_trials", "best_searched")},
                "search_macs": sum(trial_macs(t, self.p.val_images) for t in trials),
                "search_s": searched["search_s"],  # with its final stage's: the trials' own were not recorded apart
                "winner_val_acc": best["best"], "winner_is_baseline": best["spec"] == baseline_summary(self.p),
                "trials": trials}

    def run(self) -> None:
        """The arms asked for, in this order; equal compute waits for the search's result."""
        shipped = self.arm("search", lambda: self.searched("tpe"))
        self.arm("baseline", lambda: self.trained_f("baseline", baseline=True))
        self.arm("random", lambda: self.searched("random"))
        self.arm("most MACs", self.most_macs)
        if shipped is not None:
            self.arm("baseline, equal compute", lambda: self.equal_compute(shipped))


def search_macs(r: record.TrialRecord, val_images: int) -> int:
    """A trained trial's training-equivalent MACs: its training images and validation passes."""
    return trial_macs({"macs": r.macs, "epochs": len(r.curve), "images": r.train_images}, val_images)


def trial_macs(t: dict, val_images: int) -> int:
    """search_macs of a trial as the results JSON lists it."""
    return round(t["macs"] * t["epochs"] * (t["images"] + VALIDATION_COST * val_images))


def spec_of(summary: str) -> ResNetSpec:
    """The spec a one-line summary ('N3 B1-2-1 C14-32-56 F5-3-3 k1-3-1 P4') names."""
    _, blocks, channels, conv, skip, pool = summary.split()
    spec = spec_from_text(*(",".join(part[1:].split("-")) for part in (blocks, channels, conv, skip)), int(pool[1:]))
    assert spec.summary() == summary, (spec.summary(), summary)
    return spec


def baseline_summary(p: Protocol) -> str:
    return baseline_spec(Budget(p.budget)).summary()


def recorded_seed(folder: Path, seed: int, p: Protocol) -> dict:
    """A seed's arms as measured with a final stage, under `p` but for its finalists."""
    file = folder / f"results-seed{seed}.json"
    if not file.exists():
        raise SystemExit(f"{file} does not exist: seed {seed} has no recorded searches to take")
    found = json.loads(file.read_text())
    if found["protocol"] != asdict(replace(p, finalists=found["protocol"]["finalists"])) or not found["protocol"]["finalists"]:
        raise SystemExit(f"{file} was measured under another protocol: {found['protocol']}")
    missing = [arm for arm in ARMS if arm not in found["arms"]]
    if missing:
        raise SystemExit(f"{file} lacks the arms {missing}")
    return found["arms"]


# ---------------------------------------------------------------- the cheap fidelity's ranking


def fidelity(args, p: Protocol) -> None:
    """Spearman between the best validation accuracy of `specs` random specs trained as a search
    trial is (--trial-images, the trial's epochs; or the cheaper settings asked for) and trained
    on all training images for the final stage's epochs, on the same split (seed 0). The full
    runs are shared by every cheap setting measured (OUT/fidelity-IMAGESxEPOCHS.json each)."""
    images, epochs = p.trial_images, p.trial_epochs
    space = StudyFile.load(resolve_space(p.space))
    recipe_cheap, _ = space.center_recipe(epochs)
    recipe_full, _ = space.center_recipe(p.final_stage_epochs)
    budget = Budget(p.budget)
    searched = {}  # spec -> the search trial's own cheap result, with --of-study
    if args.of_study:
        # The best distinct specs that search trained to the end, ranked by their trials' own results
        # (split and training seed 0, as here); cpu-1e5 fixes the recipe, so each is the centre one.
        [seed] = args.seed or [0]
        storage = f"sqlite:///{args.out / f'seed-{seed}' / 'studies.db'}"
        trials = record.records(optuna.load_study(study_name=args.of_study, storage=storage))
        for r in record.ranked([r for r in trials if r.state == "COMPLETE" and r.train_images == images
                                and len(r.curve) == epochs]):
            searched.setdefault(ResNetSpec.from_dict(r.spec), r.best_acc)
        specs = list(searched)[:args.specs]
    else:
        draw = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=12345))
        specs, seen = [], set()
        while len(specs) < args.specs:
            spec = space.sample_spec(draw.ask(), budget)
            if spec.summary() not in seen:
                seen.add(spec.summary())
                specs.append(spec)
    data = find_data(args.data).load(val_size=p.val_images, limit_train=p.train_images, seed=0)
    cheap_data = data.fewer_train(images)
    out = args.out / (f"fidelity-{images}x{epochs}" + (f"-{args.of_study}-seed{seed}" if args.of_study else "") + ".json")
    full = {r["spec"]: r for path in args.out.glob("fidelity-*.json") for r in json.loads(path.read_text())}
    rows = json.loads(out.read_text()) if out.exists() else []
    for spec in specs[len(rows):]:
        cheap = searched[spec] if spec in searched else train(spec, cheap_data, recipe_cheap, device="cpu",
                                                                seed=0).best_val_acc
        known = full.get(spec.summary())
        if known is None:
            run = train(spec, data, recipe_full, device="cpu", seed=0)
            known = {"full": run.best_val_acc, "full_s": round(sum(e.seconds for e in run.history), 1)}
        rows.append({"spec": spec.summary(), "macs": count(spec).macs, "cheap": cheap, "full": known["full"],
                     "full_s": known["full_s"]})
        out.write_text(json.dumps(rows, indent=1) + "\n")
        print(json.dumps(rows[-1]), flush=True)
    rho = spearman([r["cheap"] for r in rows], [r["full"] for r in rows])
    top = sorted(rows, key=lambda r: -r["cheap"])[:p.finalists]
    best_full = max(r["full"] for r in rows)
    which = f"best specs study {args.of_study!r} of seed {seed} trained" if args.of_study else "random specs"
    print(f"\n{len(rows)} {which} of {p.space} at {p.budget:,} params, seed-0 split ({p.train_images:,} training / "
          f"{p.val_images:,} validation images of the CIFAR-10 JPEG copy)\n")
    print(f"| spec | MACs | {images:,} images x {epochs} epochs, val % | {p.train_images:,} images x "
          f"{p.final_stage_epochs} epochs, val % |")
    print("|---|---:|---:|---:|")
    for r in sorted(rows, key=lambda r: -r["full"]):
        print(f"| {r['spec']} | {r['macs']:,} | {100 * r['cheap']:.2f} | {100 * r['full']:.2f} |")
    print(f"\nSpearman {rho:+.2f} over {len(rows)} specs; the cheap fidelity's top {p.finalists} hold the full "
          f"fidelity's best: {any(r['full'] == best_full for r in top)}")
    print(json.dumps({"fidelity": str(out), "images": images, "epochs": epochs, "specs": len(rows), "spearman": rho,
                      "best_full": best_full, "full_s": round(sum(r["full_s"] for r in rows))}))


# ---------------------------------------------------------------- the tables


def spread(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.2f} ± {100 * sd:.2f}"


def compute(row: dict) -> int:
    return row.get("search_macs", 0) + row["train_macs"]


def tables(args, p: Protocol) -> None:
    seeds = {}
    for path in sorted(args.out.glob("results-seed*.json")):
        found = json.loads(path.read_text())
        if found["protocol"] == asdict(p):
            seeds[int(path.stem.removeprefix("results-seed"))] = found["arms"]
    print(f"CIFAR-10 JPEG copy; budget {p.budget:,} params ({p.space}); {p.train_images:,} training / "
          f"{p.val_images:,} validation images from the training set, 10,000 test images used once per network; "
          f"F = {p.final_epochs} epochs on {p.f_images:,} images; search: {p.trials} trained trials on "
          f"{p.trial_images:,} images x {p.trial_epochs} epochs, "
          + (f"final stage {p.finalists} finalists + baseline x {p.final_stage_epochs} epochs" if p.finalists else
             "no final stage (--finalists 0)") + f"; seeds {sorted(seeds)}\n")
    print("| arm | seeds | test acc %, mean ± sd | network (seed by seed) | GMAC-epochs per image | seconds |")
    print("|---|---:|---:|---|---:|---:|")
    for arm in ARMS:
        rows = [s[arm] for s in seeds.values() if arm in s]
        if rows:
            networks = "; ".join(r["network"] + (f" x{r['epochs']}" if r["epochs"] != p.final_epochs else "")
                                 for r in rows)
            print(f"| ({ROMAN[arm]}) {arm} | {len(rows)} | {spread([r['test_acc'] for r in rows])} | {networks} | "
                  f"{statistics.mean(compute(r) for r in rows) / p.f_images / 1e9:.2f} | "
                  f"{statistics.mean(r.get('search_s', 0) + r['train_s'] for r in rows):,.0f} |")
    print("\n| paired difference | seeds | mean, points | search better / worse | target | met |")
    print("|---|---:|---:|---:|---|---|")
    targets = {"random": ("> 0", 0.0), "baseline": (">= +5", 0.05), "baseline, equal compute": (">= 0", 0.0)}
    verdicts = {}
    for other, (said, least) in targets.items():
        diffs = [s["search"]["test_acc"] - s[other]["test_acc"] for s in seeds.values() if "search" in s and other in s]
        if diffs:
            mean = statistics.mean(diffs)
            met = mean > least if other == "random" else mean >= least
            verdicts[other] = {"mean": mean, "seeds": len(diffs), "met": met}
            print(f"| (ii) - ({ROMAN[other]}) {other} | {len(diffs)} | {100 * mean:+.2f} | "
                  f"{sum(d > 0 for d in diffs)} / {sum(d < 0 for d in diffs)} | {said} | {'yes' if met else 'no'} |")
    searches = [(seed, s[arm]) for seed, s in seeds.items() for arm in ("search", "random") if arm in s]
    if searches:
        print(f"\n| seed | arm | trained (pruned) | winner, F test % | its {'final-stage' if p.finalists else 'trial'} "
              "val % | best of the search at the cheap fidelity |")
        print("|---:|---|---:|---|---:|---|")
        for seed, r in searches:
            print(f"| {seed} | {r['sampler']} | {r['trained']} "
                  f"({r['pruned']}) | {r['network']}{' (baseline)' if r['winner_is_baseline'] else ''}, "
                  f"{100 * r['test_acc']:.2f} | {100 * r['winner_val_acc']:.2f} | {r['best_searched']} |")
    noise = {int(path.stem.removeprefix("noise-seed")): json.loads(path.read_text())
             for path in sorted(args.out.glob("noise-seed*.json")) if int(path.stem.removeprefix("noise-seed")) in seeds}
    sds = [statistics.stdev(r["test_acc"]) for found in noise.values() for r in found.values() if len(r["test_acc"]) > 1]
    if sds:
        print("\n| seed | arm | network | F test % by training seed 0, 1, ... | mean ± sd |")
        print("|---:|---|---|---|---:|")
        for seed, found in noise.items():
            for arm, r in found.items():
                print(f"| {seed} | ({ROMAN[arm]}) {arm} | {r['network']} | "
                      f"{', '.join(f'{100 * a:.2f}' for a in r['test_acc'])} | {spread(r['test_acc'])} |")
        pooled = statistics.mean(sd ** 2 for sd in sds) ** 0.5
        print(f"\nOne network's F test accuracy varies with its training seed by sd {100 * pooled:.2f} points "
              f"(pooled over {len(sds)} networks): a paired difference of two arms, by about "
              f"{100 * pooled * 2 ** 0.5:.2f} per seed.")
    print(json.dumps({"results": str(args.out), "seeds": sorted(seeds), "protocol": asdict(p),
                      "mean_test_acc": {arm: statistics.mean(s[arm]["test_acc"] for s in seeds.values() if arm in s)
                                        for arm in ARMS if any(arm in s for s in seeds.values())},
                      "paired": verdicts}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=default_data())
    parser.add_argument("--seed", type=int, action="append", help="run this seed's arms (repeatable)")
    parser.add_argument("--arms", help="only these arms, separated by ; (the search first: the others "
                                       "read its study), so one seed's arms can run as parallel processes")
    parser.add_argument("--fidelity", action="store_true", help="measure the cheap fidelity's ranking instead")
    parser.add_argument("--specs", type=int, default=16, help="random specs --fidelity trains (default 16)")
    parser.add_argument("--of-study", help="with --fidelity: the best specs this study of --seed trained, not random ones")
    parser.add_argument("--trial-images", type=int, default=Protocol.trial_images,
                        help=f"the search trials' images (default {Protocol.trial_images:,}; the pilot's: 1,000)")
    parser.add_argument("--trial-epochs", type=int, default=Protocol.trial_epochs,
                        help=f"the search trials' epochs (default {Protocol.trial_epochs})")
    parser.add_argument("--finalists", type=integer_at_least(0), default=Protocol.finalists,
                        help=f"the search's final stage (default {Protocol.finalists}; 0: none, the best trial wins)")
    parser.add_argument("--from", dest="recorded", type=Path, metavar="DIR",
                        help="with --finalists 0: take each --seed's searches from DIR, where they ran with a final "
                             "stage under the same protocol otherwise, instead of running them again")
    parser.add_argument("--noise", type=int, metavar="K",
                        help="train each arm's network of --seed F again with training seeds 0..K-1 instead")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default torch's)")
    parser.add_argument("--out", type=Path, default=Path("results/search-real"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    p = Protocol(trial_images=args.trial_images, trial_epochs=args.trial_epochs, finalists=args.finalists)
    if args.fidelity:
        return fidelity(args, p)
    if args.of_study:
        parser.error("--of-study goes with --fidelity")
    if args.recorded and (p.finalists or args.noise):
        parser.error("--from derives --finalists 0 from searches with a final stage; not with --noise")
    for seed in args.seed or []:
        run = SeedRun(args.out, seed, p, args.data, args.arms.split(";") if args.arms else ARMS)
        if args.recorded:
            run.without_final_stage(recorded_seed(args.recorded, seed, p))
        else:
            run.training_noise(args.noise) if args.noise else run.run()
    tables(args, p)


if __name__ == "__main__":
    main()
