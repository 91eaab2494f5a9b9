"""Fixtures for the shiftcomp package tests."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _restore_threads():
    """Training runs use --threads 1 (fast and stable on a shared CPU); give the session its setting back."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)
