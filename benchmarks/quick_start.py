"""README's CPU quick start, timed as a new user meets it: its `run` command, read from README.md
(the block after the cpu-quick-start marker, from `resnet-search run` on: the setup before it is
timed apart), in a fresh folder with an empty image cache, so each run decodes its images first.

    python benchmarks/quick_start.py --runs 3

Before each run it waits (up to --wait s) for the 1-minute load average to fall under --load,
and it prints the seconds with the load before and after; the median of the runs started under
--load is the figure README quotes. RESNET_SEARCH_DATA names the images (default: the JPEG copy
of CIFAR-10 beside the clone). Last line: one JSON object.
"""

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, default_data


def readme_command() -> list[str]:
    lines = (REPO / "README.md").read_text().splitlines()
    line = lines[lines.index("<!-- cpu-quick-start -->") + 2]
    words = shlex.split(line[line.index("resnet-search run"):])
    return [str(Path(sys.executable).with_name("resnet-search")), *words[1:]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--load", type=float, default=1.5, help="start a run only under this 1-minute load")
    parser.add_argument("--wait", type=float, default=900, help="seconds to wait for it before running anyway")
    args = parser.parse_args()
    command = readme_command()
    env = {**os.environ, "RESNET_SEARCH_DATA": os.environ.get("RESNET_SEARCH_DATA") or default_data()}
    runs = []
    for n in range(args.runs):
        waited = time.time()
        while os.getloadavg()[0] >= args.load and time.time() - waited < args.wait:
            time.sleep(5)
        with tempfile.TemporaryDirectory() as folder:
            before = os.getloadavg()
            started = time.time()
            done = subprocess.run(command, cwd=folder, env={**env, "RESNET_SEARCH_CACHE": f"{folder}/cache"},
                                  capture_output=True, text=True)
            seconds = time.time() - started
            if done.returncode != 0:
                raise SystemExit(f"run {n + 1} failed: {done.stderr.strip().splitlines()[-1:]}")
        runs.append({"seconds": round(seconds, 1), "load_before": [round(x, 2) for x in before],
                     "load_after": [round(x, 2) for x in os.getloadavg()]})
        print(f"run {n + 1}: {seconds:.1f} s, load {before[0]:.2f} before, {os.getloadavg()[0]:.2f} after", flush=True)
    quiet = [r["seconds"] for r in runs if r["load_before"][0] < args.load]
    median = statistics.median(quiet) if quiet else None
    print(f"median of the {len(quiet)} runs started under load {args.load}: "
          + (f"{median:.0f} s" if median is not None else "none started under it"))
    print(json.dumps({"command": shlex.join(["resnet-search", *command[1:]]), "runs": runs,
                      "median_s_under_load": median, "load": args.load}))


if __name__ == "__main__":
    main()
