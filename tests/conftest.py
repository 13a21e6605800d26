"""Fixtures for every test."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    """Collect after each test, so a leaked socket or transport warns (and fails, with
    filterwarnings=error) in the test that leaked it, not in whichever test runs next."""
    yield
    gc.collect()
