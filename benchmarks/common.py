"""What the benchmark scripts share."""

import os
from pathlib import Path

from search.data import DATA_ENV

REPO = Path(__file__).resolve().parent.parent


def default_data() -> str:
    """$RESNET_SEARCH_DATA, else the JPEG copy of CIFAR-10 beside the clone."""
    return os.environ.get(DATA_ENV) or str(REPO.parent / "shared" / "datasets" / "cifar10-jpeg")
