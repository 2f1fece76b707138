"""Test settings stricter than a user's: warnings are errors (pyproject), deterministic torch."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.manual_seed(0)
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

ROOT = Path(__file__).resolve().parent.parent


def data_root() -> Path | None:
    """The real datasets' folder from METAREC_DATA, or None."""
    root = os.environ.get("METAREC_DATA")
    return Path(root) if root and Path(root).is_dir() else None


@pytest.fixture
def shared_data() -> Path:
    root = data_root()
    if root is None:
        pytest.skip(
            "real datasets not available: set METAREC_DATA=../shared/datasets to run this test"
        )
    return root


@pytest.fixture
def f64():
    """Run a test in float64 (reference-equivalence tests)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)
