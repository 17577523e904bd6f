"""The federation benchmark's inputs: sizes, targets, CKKS parameter sets, simulated updates."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from privacy.he import CkksParams

TENANTS = (10, 50)
PARAMETERS = 100_000
REPEATS = 7
TARGET_TENANTS = 50
TARGET_ROUND_S = 2.0
UPDATE_STD = 0.01
"""Entries of a simulated update ~ N(0, UPDATE_STD): the size of one round's parameter delta."""
SWEEP = (
    CkksParams(4096, (60, 49), 40),
    CkksParams(4096, (50, 50), 35),
    CkksParams(4096, (40, 40), 30),
    CkksParams(8192, (60, 40), 40),
    CkksParams(8192, (60, 60), 40),
    CkksParams(16384, (60, 60), 40),
)


def simulated_round(
    tenants: int, parameters: int, seed: int = 0
) -> tuple[npt.NDArray[np.float64], list[npt.NDArray[np.float32]]]:
    """FedAvg weights (example count shares, summing to 1) and float32 updates of N clients.

    Weights as shares, rather than raw example counts, make the encrypted values small, which
    is the harder case for CKKS's absolute precision: the error reported is the larger one.
    """
    rng = np.random.default_rng(seed)
    counts = rng.integers(50, 5_000, tenants).astype(np.float64)
    weights = counts / counts.sum()
    updates = [rng.normal(0.0, UPDATE_STD, parameters).astype(np.float32) for _ in range(tenants)]
    return weights, updates
