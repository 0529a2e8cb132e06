"""Named random streams derived from one root seed.

Each consumer (pretraining, sampler, probe t, retrain i, ...) gets its own stream from
``numpy.random.SeedSequence([seed, hash(name)])``, so adding or replaying one consumer never
shifts another; this is what makes resumed searches exact (bet.md §5, §14.6).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def _key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")


def seed_sequence(seed: int, *names: str | int) -> np.random.SeedSequence:
    return np.random.SeedSequence([int(seed), *(_key(str(n)) for n in names)])


def np_rng(seed: int, *names: str | int) -> np.random.Generator:
    """A numpy Generator for the named stream."""
    return np.random.Generator(np.random.PCG64(seed_sequence(seed, *names)))


def int_seed(seed: int, *names: str | int) -> int:
    """A 63-bit integer seed for the named stream (for torch generators)."""
    return int(seed_sequence(seed, *names).generate_state(2, np.uint32).view(np.uint64)[0] >> 1)


def torch_generator(seed: int, *names: str | int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(int_seed(seed, *names))
    return g
