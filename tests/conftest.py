import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# The one setting for real images: the JPEG copy of CIFAR-10 beside the clone unless overridden.
DATA = Path(os.environ.get("RESNET_SEARCH_DATA", REPO.parent / "shared" / "datasets" / "cifar10-jpeg"))
CLI = Path(sys.executable).with_name("resnet-search")


def have_real_data() -> bool:
    return (DATA / "train").is_dir() and (DATA / "test").is_dir()


needs_data = pytest.mark.skipif(
    not have_real_data(), reason=f"real CIFAR-10 images not found at {DATA} (set RESNET_SEARCH_DATA)"
)


def run_cli(*args, env=None, timeout=600, cwd=None):
    """Run the installed console script exactly as a user would."""
    return subprocess.run(
        [str(CLI), *map(str, args)], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})}, cwd=cwd,
    )


def assert_user_error(result):
    """One clear line on stderr, exit code 2, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]
