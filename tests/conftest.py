"""Shared test fixtures: where the reference fixtures live, and a CLI runner."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REFERENCE = Path(os.environ.get("SEGREPRO_REFERENCE", REPO.parent / "shared" / "reference"))
FIXTURES = REFERENCE / "fixtures"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    if not REFERENCE.is_dir():
        pytest.skip(f"reference specs not found at {REFERENCE} (set SEGREPRO_REFERENCE or put ../shared beside the clone)")
    return REFERENCE


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.skip(f"numeric fixtures not found at {FIXTURES} (set SEGREPRO_REFERENCE or put ../shared beside the clone)")
    return FIXTURES
