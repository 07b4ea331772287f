"""Soak: four workers of one PostgreSQL study under faults for --minutes, then an account of every trial.

    python benchmarks/soak.py --minutes 60 --seed 0 --out results/soak-60min.json
    python benchmarks/soak.py --minutes 2 --kill-every 30 40          # CI's short version

Starts a real PostgreSQL (scripts/postgres.sh) and --workers real `resnet-search run` processes of
one study on cpu-small (tiny networks, --epochs 4 on --limit-train images; trials of 20-60 s on
two shared cores). At seeded random moments (every --kill-every LOW HIGH seconds, 2-4 minutes by
default) it SIGKILLs one worker and starts a replacement, or (one time in four) sends one SIGINT
and starts a replacement once it has exited; once, about half way, it stops the server for
--outage seconds and starts it again, which the workers ride out (--storage-retry). Two kills
are aimed, not left to luck: the first waits until a worker is writing a checkpoint (the
temporary file layout.save_atomic writes beside it, named after the writer's pid, is on disk)
and kills that writer, counted as landed only if the temporary file is still there after it
died; the second then waits until a worker is training the retry of a trial it killed
(Optuna's retry_history) and kills it. After --minutes every worker gets a SIGINT, and once the dead
workers' heartbeats are stale, --workers clean workers finish the study at its trained count
plus what is pending plus 2.

Then the account, as tables and a JSON last line: trials by state; every failed trial with its
reason; each killed or interrupted trial, the next run of it and the epoch it resumed from
against what its checkpoint held just after the signal; every trial a fault cut short, signalled
or not, trained by a later run of it or by a twin; the baseline trained once; nothing
RUNNING or WAITING; trained trials exactly as asked; no spec trained by two trials at once;
every checkpoint the study lists loads; no temporary file or checkpoint folder left; `best
--export` and `report` work. Any violation is listed and the exit code is 1.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this checkout's package, as the workers get it

import optuna  # noqa: E402
from optuna.trial import TrialState  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from common import default_data  # noqa: E402
from search.study.layout import Outputs  # noqa: E402
from resnet_space import ResNetSpec  # noqa: E402
from search.study import record  # noqa: E402
from search.engine.data import cache_root, load_data  # noqa: E402
from search.study.storage import RDBStorage  # noqa: E402
from search.engine.train import load_checkpoint, load_model  # noqa: E402

STUDY = "soak"
SPACE = REPO / "studies" / "cpu-small.toml"
PG = ["bash", str(REPO / "scripts" / "postgres.sh")]
CHAOS_TRIALS = 100_000  # the chaos workers never finish the study; the final workers ask the exact total
TEMP_FILE = re.compile(r".+\.tmp(\d+)$")  # layout.save_atomic's temporary file: NAME.tmpPID
CUT_SHORT = ("interrupted", "worker lost", "cut off from the storage")  # fail reasons a fault writes
TRIAL_STARTS = re.compile(r"^trial (\d+): ", re.M)  # the line a worker logs as a trial's training starts


def now() -> float:
    return time.monotonic()


class Worker:
    """One `resnet-search run` process and its log."""

    def __init__(self, number: int, command: list[str], cwd: Path, logs: Path):
        self.number, self.log = number, logs / f"worker-{number}.log"
        self.ending = None  # what we did to it: "killed", "interrupted", "stopped"
        with open(self.log, "w") as out:
            # A background process may inherit SIGINT ignored; Ctrl-C must reach it as a user's does.
            self.proc = subprocess.Popen(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                         env={**os.environ, "OMP_NUM_THREADS": "1",
                                              "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))},
                                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def trial(self) -> int | None:
        """The trial it is training: a quiet worker logs nothing between a trial's first line and its
        end (a line of its result, or of a storage outage that cut it short)."""
        lines = self.log.read_text(errors="replace").strip().splitlines()
        found = TRIAL_STARTS.match(lines[-1]) if lines else None
        return int(found[1]) if found else None

    def tail(self, lines: int = 8) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


class Soak:
    def __init__(self, args, root: Path, url: str, data: str, port: int):
        self.args, self.root, self.url, self.data, self.port = args, root, url, data, port
        self.rng = random.Random(args.seed)
        self.work, self.logs = root / "work", root / "logs"
        self.work.mkdir()
        self.logs.mkdir()
        self.outputs = Outputs(self.work / "studies" / "artifacts", STUDY, url)  # the workers' folders
        self.checkpoints = self.outputs.checkpoints
        self.workers: list[Worker] = []
        self.numbers = itertools.count()
        self.events: list[dict] = []  # kills and interrupts, each with the trial hit and its checkpoint's epochs
        self.restarts: list[dict] = []
        self.violations: list[str] = []

    # ------------------------------------------------------------ workers

    def command(self, trials: int) -> list[str]:
        a = self.args
        return [sys.executable, "-m", "search.commands.cli", "run", "--device", "cpu", "--space", str(SPACE),
                "--study", STUDY,
                "--storage", self.url, "--trials", str(trials), "--epochs", str(a.epochs), "--limit-train",
                str(a.limit_train), "--val-size", str(a.val_size), "--data", self.data, "--seed", str(a.seed),
                "--finalists", "0", "--heartbeat", str(a.heartbeat), "--storage-retry", str(a.storage_retry), "--quiet"]

    def start_worker(self, trials: int = CHAOS_TRIALS) -> Worker:
        w = Worker(next(self.numbers), self.command(trials), self.work, self.logs)
        self.workers.append(w)
        return w

    def alive(self) -> list[Worker]:
        return [w for w in self.workers if w.alive()]

    def check_exits(self) -> None:
        """A worker that ended by itself during the chaos is a violation; a replacement takes its place."""
        for w in self.workers:
            if not w.alive() and w.ending is None:
                w.ending = "exited"
                self.violations.append(f"worker {w.number} exited by itself with code {w.proc.returncode}: "
                                       f"{w.tail(3)!r}")
                self.start_worker()

    def sleep(self, seconds: float) -> None:
        end = now() + seconds
        while now() < end:
            self.check_exits()
            time.sleep(min(1.0, max(0.0, end - now())))

    # ------------------------------------------------------------ the study, read

    def study(self) -> optuna.Study:
        return optuna.load_study(study_name=STUDY, storage=self.url)

    def running_trial(self, w: Worker, study: optuna.Study) -> optuna.trial.FrozenTrial | None:
        """The trial w is training now, if any."""
        number = w.trial()
        if number is None or not w.alive():
            return None
        t = study.trials[number] if number < len(study.trials) else None
        return t if t is not None and t.state == TrialState.RUNNING else None

    def checkpoint_epochs(self, trial: optuna.trial.FrozenTrial) -> int:
        """Epochs the trial's last.pt holds now: what a run resuming it must replay."""
        first = trial.user_attrs.get("first_trial", trial.number)
        last = self.checkpoints / f"trial-{first}" / "last.pt"
        try:
            return len(load_checkpoint(last)["history"])
        except Exception:  # noqa: BLE001 - none yet, as search.engine.train.resumable_state takes it
            return 0

    def note(self, kind: str, w: Worker, trial, **more) -> dict:
        event = {"kind": kind, "at_s": round(now() - self.started, 1), "worker": w.number,
                 "trial": None if trial is None else trial.number, **more}
        self.events.append(event)
        print(f"[{event['at_s']:7.1f} s] {kind}: worker {w.number}"
              + (f", trial {trial.number}" if trial is not None else ", between trials")
              + "".join(f", {k} {v}" for k, v in more.items()), flush=True)
        return event

    # ------------------------------------------------------------ faults

    def kill(self, w: Worker, trial, kind: str, **more) -> dict:
        os.kill(w.pid, signal.SIGKILL)
        w.ending = "killed"
        w.proc.wait()
        # Read after it died and before the grace passes, so no retry has written to it yet.
        epochs = None if trial is None else self.checkpoint_epochs(trial)
        event = self.note(kind, w, trial, checkpoint_epochs=epochs, state_after=self.state_now(trial), **more)
        self.start_worker()
        return event

    def state_now(self, trial) -> str | None:
        """The trial's state once the signalled worker is gone: COMPLETE or PRUNED where it ended
        between our reading it RUNNING and the signal."""
        return None if trial is None else self.study().trials[trial.number].state.name

    def victims(self, study: optuna.Study) -> list[tuple[Worker, optuna.trial.FrozenTrial]]:
        """Workers training a trial that a kill leaves retryable (Optuna retries one run twice)."""
        found = []
        for w in self.alive():
            t = self.running_trial(w, study)
            if t is not None and len(t.system_attrs.get("retry_history", [])) < RDBStorage.max_retry:
                found.append((w, t))
        return found

    def random_kill(self) -> None:
        found = self.victims(self.study())
        if found:
            w, t = self.rng.choice(found)
            self.kill(w, t, "kill")
        else:  # nobody training (all loading, or between trials): kill one anyway
            self.kill(self.rng.choice(self.alive()), None, "kill")

    def checkpoint_kill(self, until: float) -> None:
        """Kill a worker while it writes a checkpoint: seen as its temporary file, proved by the file
        outliving it (save_atomic removes it on any exit Python sees, and renames it when done)."""
        for polls in itertools.count():
            if now() >= until:
                break
            if polls % 1000 == 0:  # every half second or so; a write lasts milliseconds
                self.check_exits()
                pids = {w.pid: w for w in self.alive()}
            temp = self.find_temp(pids)
            if temp is None:
                time.sleep(0.0003)
                continue
            path, pid = temp
            w = pids[pid]
            os.kill(pid, signal.SIGKILL)
            w.proc.wait()
            landed = path.exists()
            study = self.study()
            number = w.trial()
            trial = study.trials[number] if number is not None else None
            w.ending = "killed"
            epochs = None if trial is None else self.checkpoint_epochs(trial)
            self.note("kill during checkpoint write" if landed else "kill (aimed at a checkpoint write, landed after)",
                      w, trial, checkpoint_epochs=epochs, temp_file=path.name)
            self.start_worker()
            if landed:
                return
            self.sleep(5)
        self.violations.append("no kill landed during a checkpoint write before the chaos ended")

    def find_temp(self, pids: dict) -> tuple[Path, int] | None:
        try:
            for folder in os.scandir(self.checkpoints):
                for f in os.scandir(folder.path):
                    m = TEMP_FILE.match(f.name)
                    if m and int(m[1]) in pids:
                        return Path(f.path), int(m[1])
        except FileNotFoundError:
            pass
        return None

    def retry_kill(self, until: float) -> None:
        """Kill a worker while it trains a retry of a trial this soak killed (Optuna's retry_history)."""
        while now() < until:
            killed = {e["trial"] for e in self.events if e["kind"].startswith("kill")}
            found = [(w, t) for w, t in self.victims(self.study())
                     if killed & set(t.system_attrs.get("retry_history", []))]
            if found:
                self.sleep(self.rng.uniform(0, 3))  # somewhere inside its training, not at its first line
                w, t = found[0]
                if self.running_trial(w, self.study()) is not None:
                    self.kill(w, t, "kill during a retry", retry_of=t.system_attrs["retry_history"][-1])
                    return
            self.sleep(1)
        self.violations.append("no kill landed during a retry before the chaos ended")

    def interrupt(self, w: Worker, kind: str = "interrupt") -> None:
        """One SIGINT, as Ctrl-C: the worker records its trial as interrupted and exits 130."""
        trial = self.running_trial(w, self.study())
        w.proc.send_signal(signal.SIGINT)
        w.ending = "interrupted" if kind == "interrupt" else "stopped"
        try:
            code = w.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.violations.append(f"worker {w.number} did not exit within 120 s of a SIGINT; killed")
            w.proc.kill()
            code = w.proc.wait()
        if code != 130:
            self.violations.append(f"worker {w.number} exited {code} after a SIGINT, not 130: {w.tail(3)!r}")
        self.note(kind, w, trial, exit_code=code, state_after=self.state_now(trial),
                  checkpoint_epochs=None if trial is None else self.checkpoint_epochs(trial))

    def random_interrupt(self) -> None:
        found = self.victims(self.study())
        w = self.rng.choice(found)[0] if found else self.rng.choice(self.alive())
        self.interrupt(w)
        self.start_worker()

    def restart_server(self) -> None:
        at = round(now() - self.started, 1)
        pg = str(self.root / "pg")
        subprocess.run([*PG, "stop", pg], check=True, capture_output=True)
        print(f"[{at:7.1f} s] server stopped for {self.args.outage:g} s", flush=True)
        self.sleep(self.args.outage)
        subprocess.run([*PG, "restart", pg, str(self.port)], check=True, capture_output=True)
        self.restarts.append({"at_s": at, "down_s": round(now() - self.started - at, 1)})
        print(f"[{now() - self.started:7.1f} s] server started again", flush=True)

    # ------------------------------------------------------------ the run

    def schedule(self) -> list[tuple[float, str]]:
        """Seeded moments: the two aimed kills and a SIGINT first, then kills and SIGINTs (3 to 1); the
        server restart at a seeded moment in the middle."""
        a, t, plan = self.args, 0.0, []
        lo, hi = a.kill_every
        end = a.minutes * 60
        while True:
            t += self.rng.uniform(lo, hi)
            if t > end - 10:
                break
            first = ("checkpoint kill", "interrupt")  # the retry kill follows the checkpoint kill at once
            plan.append((t, first[len(plan)] if len(plan) < len(first) else
                         self.rng.choice(("kill", "kill", "kill", "interrupt"))))
        plan.append((self.rng.uniform(0.35, 0.65) * end, "restart"))
        return sorted(plan)

    def chaos(self) -> None:
        end = self.args.minutes * 60
        self.started = now()
        for _ in range(self.args.workers):
            self.start_worker()
        for at, kind in self.schedule():
            self.sleep(max(0.0, self.started + at - now()))
            if now() - self.started > end:
                break
            until = self.started + end
            # The kill of a retry waits for the retry of the checkpoint kill's victim to train.
            {"checkpoint kill": lambda: (self.checkpoint_kill(until), self.retry_kill(until)),
             "kill": self.random_kill, "interrupt": self.random_interrupt, "restart": self.restart_server}[kind]()
        self.sleep(max(0.0, self.started + end - now()))
        self.chaos_s = now() - self.started
        for w in self.alive():
            self.interrupt(w, "stop at the end")

    def pending(self, study: optuna.Study) -> int:
        """Runs still owed: trials running (now dead, soon retried) or waiting, and interrupted ones not requeued."""
        requeued = set(record.StudyRecord.of(study).requeued)
        return sum(r.state in ("RUNNING", "WAITING") or (r.interrupted and r.number not in requeued)
                   for r in record.records(study))

    def finish(self) -> int:
        """After the heartbeat grace, clean workers finish the study at an exact total."""
        time.sleep(3 * self.args.heartbeat + 2)
        study = self.study()
        asked = record.trained_count(study) + self.pending(study) + 2
        print(f"[{now() - self.started:7.1f} s] chaos over; {self.args.workers} clean workers finish the study at "
              f"{asked} trained trials", flush=True)
        final = [self.start_worker(asked) for _ in range(self.args.workers)]
        deadline = now() + self.args.final_minutes * 60
        for w in final:
            try:
                code = w.proc.wait(timeout=max(1.0, deadline - now()))
            except subprocess.TimeoutExpired:
                w.proc.kill()
                code = w.proc.wait()
                self.violations.append(f"final worker {w.number} still running after {self.args.final_minutes} min")
            w.ending = "finished"
            if code != 0:
                self.violations.append(f"final worker {w.number} exited {code}: {w.tail(3)!r}")
        self.final_s = now() - self.started - self.chaos_s
        return asked

    # ------------------------------------------------------------ the account

    def account(self, asked: int) -> dict:
        study = self.study()
        trials = {t.number: t for t in study.get_trials()}
        recs = {n: record.TrialRecord.of(t) for n, t in trials.items()}
        v = self.violations
        by_state = {s.name: sum(t.state == s for t in trials.values()) for s in TrialState}

        failed = [{"trial": r.number, "reason": r.fail_reason} for r in recs.values() if r.state == "FAIL"]
        v += [f"trial {f['trial']} failed with no reason recorded" for f in failed if not f["reason"].strip()]

        # Each kill and interrupt: the next run of that trial, and the epoch it resumed from.
        for e in self.events:
            if e["trial"] is not None:
                e["landed_on"] = landed_on(e["trial"], recs)
        signalled = {e["landed_on"] for e in self.events if e["trial"] is not None}
        resumes = []
        for e in self.events:
            if e["trial"] is None:
                continue
            n = e["landed_on"]
            kind = e["kind"] + (f" (aimed at trial {e['trial']}, which the outage had cut off)" if n != e["trial"] else "")
            hit = recs[n]
            if e.get("state_after") in ("COMPLETE", "PRUNED"):
                resumes.append({"trial": n, "kind": kind + " (after the trial ended)", "checkpoint_epochs": None,
                                "next_run": None, "next_state": hit.state, "resumed_from_epoch": None,
                                "last_run": None, "last_state": hit.state})
                continue  # it ended as we aimed: the signal found the worker between trials
            why = "worker lost" if kind.startswith("kill") else "interrupted"
            if hit.state != "FAIL" or not hit.fail_reason.startswith(why):
                v.append(f"trial {n} ({kind}) ended {hit.state} ({hit.fail_reason!r}), not FAIL for {why!r}")
            lineage = hit.first_trial if hit.first_trial is not None else n
            later = [r for m, r in sorted(recs.items()) if m > n and r.first_trial == lineage]
            # Copies that stepped aside before training (another trial trains that spec) resume nothing.
            ran = [r for r in later if not (r.duplicate or r.over_budget)]
            # Nor is anything owed once a trial of another lineage trained the same spec and recipe.
            excused = [r for r in later if r.duplicate_of is not None and recs[r.duplicate_of].counts_as_trained
                       and recs[r.duplicate_of].first_trial != lineage]
            if not ran and excused:
                copy = excused[0]
                resumes.append({"trial": n, "kind": f"{kind} (trial {copy.duplicate_of} trained its spec and recipe)",
                                "checkpoint_epochs": e["checkpoint_epochs"], "next_run": copy.number,
                                "next_state": copy.state, "resumed_from_epoch": None, "last_run": copy.number,
                                "last_state": copy.state})
                continue
            if not ran:
                v.append(f"trial {n} ({kind}) was never run again"
                         + (" (stepped aside: " + "; ".join(f"trial {r.number}, {r.prune_reason}" for r in later) + ")"
                            if later else ""))
                continue
            again = last = ran[0]
            for r in ran[1:]:  # a run the outage cut off was queued again: the run after it is owed
                cut_off = last.fail_reason.startswith(("cut off from the storage", "worker lost"))
                if not (last.state == "FAIL" and cut_off and last.number not in signalled):
                    break
                last = r
            row = {"trial": n, "kind": kind, "checkpoint_epochs": e["checkpoint_epochs"], "next_run": again.number,
                   "next_state": again.state, "resumed_from_epoch": again.resumed_from_epoch, "last_run": last.number,
                   "last_state": last.state}
            resumes.append(row)
            if last.state not in ("COMPLETE", "PRUNED") and last.number not in signalled:
                v.append(f"trial {n}'s last run, trial {last.number}, ended {last.state}"
                         + (f" ({last.fail_reason})" if last.fail_reason else ""))
            if again.resumed_from_epoch != e["checkpoint_epochs"]:
                v.append(f"trial {again.number} resumed trial {n} from epoch {again.resumed_from_epoch}, but its "
                         f"checkpoint held {e['checkpoint_epochs']}")

        v += untrained_lineages(recs)

        baseline_trained = sum(r.baseline and r.counts_as_trained for r in recs.values())
        if baseline_trained != 1:
            v.append(f"the baseline trained {baseline_trained} times, not once")
        unfinished = [r.number for r in recs.values() if r.state in ("RUNNING", "WAITING")]
        if unfinished:
            v.append(f"trials left RUNNING or WAITING: {unfinished}")
        trained = record.trained_count(study)
        if trained != asked:
            v.append(f"{trained} trained trials, not the {asked} asked")

        # No spec trained by two trials at once: each trial's own training, from its start to its end.
        spans = []
        for t in trials.values():
            r = recs[t.number]
            if r.training_began and t.datetime_complete and r.spec and (r.counts_as_trained or r.state == "FAIL"):
                spans.append((r.training_began, t.datetime_complete, r))
        for (a0, a1, a), (b0, b1, b) in itertools.combinations(spans, 2):
            if a.spec == b.spec and a0 < b1 and b0 < a1:
                v.append(f"trials {a.number} and {b.number} trained {a.summary} at the same time")

        # Every checkpoint the study lists loads, into its network.
        artifacts = self.work / "studies" / "artifacts"
        checkpoints = 0
        for r in recs.values():
            if r.checkpoint_artifact and r.state == "COMPLETE":
                try:
                    load_model(ResNetSpec.from_dict(r.spec), artifacts / r.checkpoint_artifact)
                    checkpoints += 1
                except Exception as e:  # noqa: BLE001
                    v.append(f"trial {r.number}'s checkpoint does not load: {type(e).__name__}: {str(e)[:120]}")

        strays = [str(p) for top in (self.work, cache_root()) for p in top.rglob("*") if TEMP_FILE.match(p.name)]
        left = [str(p) for p in self.checkpoints.glob("*")] if self.checkpoints.exists() else []
        v += [f"stray temporary file {p}" for p in strays] + [f"checkpoint folder left behind: {p}" for p in left]

        for name, cmd, made in (("best --export", ["best", "--export", str(self.root / "winner"), "--data", self.data],
                                 [self.root / "winner" / f for f in ("spec.json", "state_dict.pt", "model.pt2",
                                                                     "metrics.json")]),
                                ("report", ["report"], [self.outputs.reports / "index.html"])):
            done = subprocess.run([sys.executable, "-m", "search.commands.cli", *cmd, "--storage", self.url],
                                  cwd=self.work, capture_output=True, text=True,
                                  env={**os.environ, "PYTHONPATH": str(REPO)})
            missing = [str(p) for p in made if not p.exists()]
            if done.returncode != 0 or missing:
                v.append(f"`{name}` failed (exit {done.returncode}, missing {missing}): {done.stderr.strip()[-300:]!r}")

        kills = [e for e in self.events if e["kind"].startswith("kill")]
        interrupts = [e for e in self.events if e["kind"] == "interrupt"]
        if len(kills) < 2 or not interrupts or len(self.restarts) != 1:
            v.append(f"too few faults: {len(kills)} kills, {len(interrupts)} interrupts, {len(self.restarts)} restarts "
                     "(at least 2, 1 and exactly 1)")
        return {
            "minutes": self.args.minutes, "chaos_s": round(self.chaos_s, 1), "final_s": round(self.final_s, 1),
            "seed": self.args.seed, "workers": self.args.workers, "data": self.data,
            "kills": len(kills), "kills_during_checkpoint_write": sum(e["kind"] == "kill during checkpoint write" for e in kills),
            "kills_during_retry": sum(e["kind"] == "kill during a retry" for e in kills),
            "interrupts": len(interrupts), "server_restarts": len(self.restarts), "restarts": self.restarts,
            "trials": len(trials), "by_state": by_state, "trained": trained, "asked": asked,
            "checkpoints_loaded": checkpoints, "failed": failed, "resumes": resumes, "events": self.events,
            "worker_processes": len(self.workers), "violations": v,
            "settings": {k: getattr(self.args, k) for k in ("epochs", "limit_train", "val_size", "heartbeat",
                                                            "storage_retry", "outage", "kill_every")},
        }


def untrained_lineages(recs: dict[int, record.TrialRecord]) -> list[str]:
    """Each lineage (a trial and its copies) a fault cut short that no later run of it trained and no
    trial of another lineage trained in its place (same spec and recipe, which its copy stepped
    aside for). Unlike the events' account this reaches what no signal names: a SIGINT that met a
    worker just as it began a trial, and the trials the outage cut off."""
    lineages: dict[int, list[record.TrialRecord]] = {}
    for r in sorted(recs.values(), key=lambda r: r.number):
        if r.first_trial is not None:  # wrote its identity: a cut before that leaves nothing to resume
            lineages.setdefault(r.first_trial, []).append(r)
    lost = []
    for first, runs in lineages.items():
        cuts = [r for r in runs if r.state == "FAIL" and r.fail_reason.startswith(CUT_SHORT)]
        if not cuts:
            continue
        after = [r for r in runs if r.number > cuts[-1].number]
        if not any(r.counts_as_trained or (r.duplicate_of is not None and recs[r.duplicate_of].counts_as_trained
                                           and recs[r.duplicate_of].first_trial != first) for r in after):
            lost.append(f"trial {first}'s lineage ({', '.join(f'{r.number} {r.state}' for r in runs)}) was cut short "
                        f"by trial {cuts[-1].number} ({cuts[-1].fail_reason}) and not trained after it")
    return lost


def landed_on(aimed: int, recs: dict[int, record.TrialRecord]) -> int:
    """The run a signal aimed at a trial landed on: that trial, unless the outage had cut it off
    and its reconnected worker had moved on to the copy it queued (which then took the signal)."""
    hit = recs[aimed]
    lineage = hit.first_trial if hit.first_trial is not None else aimed
    while hit.state == "FAIL" and hit.fail_reason.startswith("cut off from the storage"):
        copy = next((r for m, r in sorted(recs.items()) if m > hit.number and r.first_trial == lineage
                     and not r.rejected), None)
        if copy is None:
            break
        hit = copy
    return hit.number


def synthetic_images(root: Path, train_per_class: int = 300, test_per_class: int = 50) -> Path:
    """A small CIFAR-like image folder, each class its own colour plus noise, where no real images are."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", train_per_class), ("test", test_per_class)):
        for c in range(10):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            colour = np.array([(37 * c) % 256, (91 * c) % 256, (163 * c) % 256])
            for i in range(n):
                Image.fromarray(np.clip(colour + rng.normal(0, 40, (32, 32, 3)), 0, 255).astype(np.uint8)).save(
                    folder / f"{i}.png")
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def show(result: dict) -> None:
    console = Console(width=120)
    t = Table(title=f"soak: {result['minutes']:g} minutes, {result['workers']} workers, seed {result['seed']}")
    for c in ("figure", "value"):
        t.add_column(c)
    for k in ("kills", "kills_during_checkpoint_write", "kills_during_retry", "interrupts", "server_restarts",
              "trials", "trained", "asked", "checkpoints_loaded", "worker_processes"):
        t.add_row(k.replace("_", " "), str(result[k]))
    t.add_row("by state", ", ".join(f"{k.lower()} {n}" for k, n in result["by_state"].items() if n))
    console.print(t)
    t = Table(title="failed trials")
    t.add_column("trial", justify="right")
    t.add_column("reason")
    for f in result["failed"]:
        t.add_row(str(f["trial"]), f["reason"] or "[red](none)")
    console.print(t)
    t = Table(title="killed and interrupted trials, run again")
    for c in ("trial", "what", "checkpoint held", "next run", "its state", "resumed from epoch"):
        t.add_column(c)
    for r in result["resumes"]:
        t.add_row(str(r["trial"]), r["kind"], str(r["checkpoint_epochs"]), str(r["next_run"]), r["next_state"],
                  str(r["resumed_from_epoch"]))
    console.print(t)
    if result["violations"]:
        console.print(f"[red]{len(result['violations'])} violation(s):")
        for line in result["violations"]:
            console.print(f"  - {line}", markup=False)
    else:
        console.print("no violations")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=60, help="length of the chaos (default 60)")
    p.add_argument("--seed", type=int, default=0, help="seeds the moments, the victims and the search (default 0)")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--kill-every", type=float, nargs=2, default=(120, 240), metavar=("LOW", "HIGH"),
                   help="seconds between faults, drawn uniformly (default 120 240)")
    p.add_argument("--outage", type=float, default=5, help="seconds the server stays down (default 5)")
    p.add_argument("--heartbeat", type=int, default=3, help="workers' --heartbeat (default 3: a grace of 9 s)")
    p.add_argument("--storage-retry", type=float, default=60, help="workers' --storage-retry (default 60)")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--limit-train", type=int, default=2000)
    p.add_argument("--val-size", type=int, default=500)
    p.add_argument("--data", default=default_data(), help="image folder (default $RESNET_SEARCH_DATA, else "
                                                          "../shared/datasets/cifar10-jpeg; synthetic if absent)")
    p.add_argument("--final-minutes", type=float, default=20, help="limit on the clean workers' finish")
    p.add_argument("--out", help="also write the JSON here")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (server data, logs, study files)")
    args = p.parse_args()

    root = Path(tempfile.mkdtemp(prefix="resnet-search-soak-"))
    root.chmod(0o755)  # as root, the server runs as the postgres user
    data = Path(args.data)
    if not ((data / "train").is_dir() and (data / "test").is_dir()):
        print(f"no images at {data}: using a synthetic image folder written to {root / 'images'}", flush=True)
        data = synthetic_images(root / "images")
    load_data(data, val_size=args.val_size, limit_train=args.limit_train, seed=args.seed)  # decoded once, cached
    port = free_port()
    started = subprocess.run([*PG, "start", str(root / "pg"), str(port)], capture_output=True, text=True)
    if started.returncode != 0:
        print(f"PostgreSQL could not be started: {started.stderr.strip()[:300]}", file=sys.stderr)
        return 1
    soak = Soak(args, root, started.stdout.strip(), str(data), port)
    print(f"soak in {root}: PostgreSQL {soak.url}, data {data}, {args.minutes:g} minutes", flush=True)
    try:
        soak.chaos()
        asked = soak.finish()
        result = soak.account(asked)
    finally:
        for w in soak.alive():
            w.proc.kill()
        subprocess.run([*PG, "stop", str(root / "pg")], capture_output=True)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    show(result)
    line = json.dumps(result)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(line + "\n")
    print(line)
    return 1 if result["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
