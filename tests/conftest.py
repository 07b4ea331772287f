import atexit
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# The one setting for real images: the JPEG copy of CIFAR-10 beside the clone unless overridden.
DATA = Path(os.environ.get("RESNET_SEARCH_DATA", REPO.parent / "shared" / "datasets" / "cifar10-jpeg"))
CLI = Path(sys.executable).with_name("resnet-search")
TINY_SPACE = REPO / "studies" / "cpu-small.toml"


def cpu_run_flags(epochs=1, limit_train=200, val_size=200, data=None, finalists=0) -> list[str]:
    """`run` flags for a small search on CPU: tiny specs, a few hundred synthetic images unless
    `data` names others; no final stage unless asked (tests/test_final_stage.py tests it)."""
    return ["--device", "cpu", "--epochs", str(epochs), "--limit-train", str(limit_train), "--val-size",
            str(val_size), "--finalists", str(finalists), "--data", str(data or synthetic_root()),
            "--space", str(TINY_SPACE), "--quiet"]


def have_real_data() -> bool:
    return (DATA / "train").is_dir() and (DATA / "test").is_dir()


needs_data = pytest.mark.skipif(
    not have_real_data(), reason=f"real CIFAR-10 images not found at {DATA} (set RESNET_SEARCH_DATA)"
)


def write_image_folder(root: Path, train_per_class: int = 30, test_per_class: int = 10, classes: int = 10) -> Path:
    """A small CIFAR-like image folder (train/<class>/*.png, test/<class>/*.png): each class its
    own colour plus noise, so a tiny network learns it in an epoch or two."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", train_per_class), ("test", test_per_class)):
        for c in range(classes):
            folder = root / split / f"class{c:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            colour = np.array([(37 * c) % 256, (91 * c) % 256, (163 * c) % 256])
            for i in range(n):
                pixels = np.clip(colour + rng.normal(0, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


@functools.cache
def synthetic_root() -> Path:
    """One synthetic image folder for the session, large enough for the CLI and scale-out tests
    (2,200 training and 200 test images); the tests that need real images say so."""
    root = Path(tempfile.mkdtemp(prefix="resnet-search-synthetic-"))
    atexit.register(shutil.rmtree, root, True)
    return write_image_folder(root, train_per_class=220, test_per_class=20)


@pytest.fixture(scope="session")
def synthetic_data():
    return synthetic_root()


def storage_url(cwd) -> str:
    """The default SQLite storage of a `run` started in cwd."""
    return f"sqlite:///{cwd}/studies/resnet-search.db"


def run_small_study(cwd, study: str, trials: int, env=None, **flags):
    """`resnet-search run` of a small study in cwd, as a user would; returns the study."""
    import optuna

    result = run_cli("run", "--budget", "2e5", "--trials", trials, "--study", study, *cpu_run_flags(**flags), cwd=cwd,
                     env=env)
    assert result.returncode == 0, result.stderr
    return optuna.load_study(study_name=study, storage=storage_url(cwd))


def run_cli(*args, env=None, timeout=600, cwd=None):
    """Run the installed console script exactly as a user would."""
    return subprocess.run(
        [str(CLI), *map(str, args)], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})}, cwd=cwd,
    )


def run_main(*args, cwd, env, monkeypatch, capsys) -> subprocess.CompletedProcess:
    """The CLI's main() in this process, as run_cli runs the installed script: for the many
    refusals, each of which would otherwise pay a fresh interpreter's start (torch, optuna)."""
    from search.commands.cli import main

    monkeypatch.chdir(cwd)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def worker(cwd, storage, study, *extra, trials=12, epochs=1, limit=100, env=None):
    """`resnet-search run` of a small study as a background worker (scale-out and fault tests)."""
    args = [str(CLI), "run", "--budget", "2e5", "--storage", storage, "--study", study, "--trials", str(trials),
            *cpu_run_flags(epochs, limit, 100), *extra]
    # One thread per worker: four workers share two cores.
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    # A shell's background job inherits SIGINT ignored, and Python then never raises
    # KeyboardInterrupt: restore the default so Ctrl-C reaches the worker as it does a user's.
    return subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for_epoch(storage, study_name, epoch, timeout=300, where=lambda trial, running: True):
    """The first running trial once it has reported `epoch` (its checkpoint is then on disk), and
    for which where(trial, all running trials) holds. Tests give their trials 4-8 epochs of
    1,000-2,000 images, so that even on an idle machine the trial is still running when the
    signal they send after epoch 1 arrives."""
    import optuna
    import sqlalchemy
    from optuna.trial import TrialState

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            study = optuna.load_study(study_name=study_name, storage=storage)
        except (KeyError, sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError):
            # not created yet, or the worker is creating Optuna's tables as we look
            time.sleep(0.5)
            continue
        running = study.get_trials(states=(TrialState.RUNNING,))
        for t in running:
            if len(t.user_attrs.get("val_acc_per_epoch", [])) >= epoch and where(t, running):
                return t
        time.sleep(0.3)
    raise AssertionError(f"no trial reached epoch {epoch} within {timeout} s")


def the_retry(trials, number):
    """The finished retry of trial `number`. On loaded cores a live worker's heartbeat can be late
    past the grace, and its retry is failed and retried in turn (Optuna marks each with the first
    trial's number): then every other retry failed for that."""
    from optuna.trial import TrialState

    from search.study.storage import WORKER_LOST

    retries = [t for t in trials if t.system_attrs.get("failed_trial") == number]
    finished = [t for t in retries if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 1, [(t.number, t.state) for t in retries]
    for t in retries:
        assert t in finished or (t.state == TrialState.FAIL
                                 and t.user_attrs.get("fail_reason", "").startswith(WORKER_LOST)), t
    return finished[0]


def onnx_accuracy(path, images, labels) -> float:
    """Accuracy of an exported model.onnx in ONNX Runtime on the CPU, fed uint8 images as floats in [0, 1]."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: (images.float() / 255).numpy()})[0]
    return (logits.argmax(1) == labels.numpy()).sum().item() / len(labels)


def assert_user_error(result):
    """One clear line on stderr, exit code 2, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and result.stderr.endswith("\n"), repr(result.stderr)  # no blank line, no second line
    assert "Traceback" not in result.stderr
    return lines[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    """moto's standalone server: a real S3-compatible HTTP server on the loopback, reached through
    boto3 as any S3 is (AWS_ENDPOINT_URL_S3), with bucket BUCKET made. It keeps what it holds in
    memory: stopped, it forgets it."""

    BUCKET = "resnet-search"

    def __init__(self):
        self.port, self.process = free_port(), None
        self.env = {"AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{self.port}", "AWS_ACCESS_KEY_ID": "test-key-id",
                    "AWS_SECRET_ACCESS_KEY": "test-secret-never-printed", "AWS_DEFAULT_REGION": "us-east-1"}

    def start(self) -> "S3Server":
        self.process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    break
            time.sleep(0.1)
        self.client().create_bucket(Bucket=self.BUCKET)
        return self

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.env["AWS_ENDPOINT_URL_S3"], region_name="us-east-1",
                            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"])

    def keys(self) -> list[str]:
        return [o["Key"] for o in self.client().list_objects_v2(Bucket=self.BUCKET).get("Contents", [])]


@pytest.fixture
def s3_server():
    server = S3Server().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url():
    """A real PostgreSQL: $RESNET_SEARCH_TEST_PG (CI starts one), else a throwaway server started
    here with scripts/postgres.sh; skipped, saying why, only when none can be started."""
    if os.environ.get("RESNET_SEARCH_TEST_PG"):
        yield os.environ["RESNET_SEARCH_TEST_PG"]
        return
    root = Path(tempfile.mkdtemp(prefix="resnet-search-pg-"))  # outside pytest's 0700 tree: the
    root.chmod(0o755)  # server runs as the postgres user when we are root
    started = subprocess.run(["bash", str(REPO / "scripts" / "postgres.sh"), "start", str(root / "pg"), str(free_port())],
                             capture_output=True, text=True)
    if started.returncode != 0:
        pytest.skip(f"PostgreSQL could not be started: {(started.stderr or started.stdout).strip()[:300]}")
    try:
        yield started.stdout.strip()
    finally:
        subprocess.run(["bash", str(REPO / "scripts" / "postgres.sh"), "stop", str(root / "pg")], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
