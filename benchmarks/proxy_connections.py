"""The database's connections with four workers on it directly, and through `serve-storage`.

    python benchmarks/proxy_connections.py            # needs $RESNET_SEARCH_TEST_PG, else starts a PostgreSQL

Each way: four CPU workers (tiny networks, 12 trials) on a fresh database, with pg_stat_activity
sampled twice a second (this script's own connection aside, no other client); prints the most
connections seen each way, then one JSON line.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy

from common import REPO

CLI = str(Path(sys.executable).with_name("resnet-search"))
RUN = ["run", "--budget", "2e5", "--trials", "12", "--device", "cpu", "--epochs", "2", "--limit-train", "500",
       "--val-size", "200", "--finalists", "0", "--space", str(REPO / "studies" / "cpu-small.toml"), "--quiet",
       "--no-baseline", "--data", os.environ.get("RESNET_SEARCH_DATA", str(REPO.parent / "shared/datasets/cifar10-jpeg"))]


def most_connections(url: str, running: list) -> int:
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    query = sqlalchemy.text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                            "AND pid <> pg_backend_pid()")
    most = 0
    while any(p.poll() is None for p in running):
        with engine.connect() as c:
            most = max(most, c.execute(query).scalar())
        time.sleep(0.5)
    return most


def workers(storage: str, study: str, folder: str) -> list:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return [subprocess.Popen([CLI, *RUN, "--storage", storage, "--study", study], cwd=folder, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(4)]


def main() -> None:
    url = os.environ.get("RESNET_SEARCH_TEST_PG")
    root = tempfile.mkdtemp(prefix="resnet-search-pg-")
    os.chmod(root, 0o755)
    if not url:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            pg_port = s.getsockname()[1]
        url = subprocess.run(["bash", str(REPO / "scripts" / "postgres.sh"), "start", f"{root}/pg", str(pg_port)],
                             capture_output=True, text=True, check=True).stdout.strip()
    with tempfile.TemporaryDirectory() as folder:
        direct = most_connections(url, workers(url, "direct", folder))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = subprocess.Popen([CLI, "serve-storage", "--storage", url, "--port", str(port)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(3)
        proxied = most_connections(url, workers(f"grpc://127.0.0.1:{port}", "proxied", folder))
        server.terminate()
        server.wait(timeout=30)
    if not os.environ.get("RESNET_SEARCH_TEST_PG"):
        subprocess.run(["bash", str(REPO / "scripts" / "postgres.sh"), "stop", f"{root}/pg"], capture_output=True)
    print(f"four workers on the database directly: at most {direct} connections")
    print(f"four workers through serve-storage: at most {proxied} connections")
    print(json.dumps({"direct": direct, "proxied": proxied, "workers": 4}))


if __name__ == "__main__":
    main()
