"""pytest setup for tests/py: the `gpu` marker, examples/ importable (examples/models.py), and
KILN_TEST_SHARD=i/n, which keeps every n-th collected test from the i-th (0-based), so that n
pytest processes can share a machine's cores (scripts/gpu_check.sh does on the GPU machine)."""

import os
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "examples"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU; skipped where torch sees none")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    shard = os.environ.get("KILN_TEST_SHARD")
    if shard:
        index, count = (int(part) for part in shard.split("/"))
        if not 0 <= index < count:
            raise pytest.UsageError(f"KILN_TEST_SHARD={shard}: want i/n with 0 <= i < n")
        deselected = [item for i, item in enumerate(items) if i % count != index]
        items[:] = [item for i, item in enumerate(items) if i % count == index]
        config.hook.pytest_deselected(items=deselected)
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
