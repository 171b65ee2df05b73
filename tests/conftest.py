"""Shared fixtures: where the conformance vectors live."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_VECTORS = Path(
    os.environ.get("SLUICE_SHARED_VECTORS", REPO_ROOT.parent / "shared" / "vectors")
)
OUR_VECTORS = REPO_ROOT / "tests" / "vectors"


@pytest.fixture(scope="session")
def shared_vectors() -> Path:
    """The conformance data written by others (../shared/vectors). Missing data is a failure,
    not a skip: conformance must never pass by not running."""
    if not (SHARED_VECTORS / "README.md").is_file():
        pytest.fail(
            f"conformance vectors not found at {SHARED_VECTORS} (set SLUICE_SHARED_VECTORS)"
        )
    return SHARED_VECTORS
