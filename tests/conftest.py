"""Run every test single-threaded (pytest-xdist already uses both cores).

On tiny tensors every op is dominated by thread synchronisation: on a busy 2-core machine a
20 x 20 training step took ~50 ms with 2 threads and ~3 ms with one.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _single_thread() -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
