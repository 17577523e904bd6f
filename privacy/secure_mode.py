"""DP secure mode: noise and Poisson sampling drawn from the operating system's CSPRNG.

Opacus' own secure mode needs `torchcsprng`, which is archived and has no build for the torch
this project pins. `SecurePrivacyEngine` is Opacus' `PrivacyEngine` with the two random
sources that the DP guarantee rests on replaced: the Poisson sampling of each batch and the
Gaussian noise of each step come from `os.urandom` (the kernel's ChaCha20 CSPRNG) instead of
torch's seedable Mersenne Twister. The noise keeps Opacus' defence against floating-point
attacks (arXiv 2107.10138, section 5.1): each sample is the sum of four Gaussians, halved.
Everything else (clipping, accounting, the optimizer step) is Opacus' own.
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from opacus import PrivacyEngine
from opacus.optimizers import DPOptimizer, get_optimizer_class
from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed
from opacus.utils.uniform_sampler import UniformWithReplacementSampler
from torch.utils.data import DataLoader

_MANTISSA = 53


def uniform(n: int) -> np.ndarray:
    """`n` floats uniform on (0, 1] with 53 random bits each, from `os.urandom`."""
    words = np.frombuffer(os.urandom(8 * n), dtype=np.uint64)
    return ((words >> np.uint64(64 - _MANTISSA)).astype(np.float64) + 1.0) * 2.0**-_MANTISSA


def normal(size: int | tuple[int, ...], std: float) -> np.ndarray:
    """N(0, std²) samples from `os.urandom`, hardened against floating-point attacks.

    Box-Muller on CSPRNG uniforms; as in Opacus' secure mode, each sample is the sum of four
    independent standard normals divided by two, which has the same distribution.
    """
    shape = (size,) if isinstance(size, int) else size
    n = math.prod(shape)
    total = np.zeros(n, dtype=np.float64)
    for _ in range(4):
        total += _standard_normal(n)
    return (total * (std / 2.0)).reshape(shape)


def _standard_normal(n: int) -> np.ndarray:
    half = (n + 1) // 2
    radius = np.sqrt(-2.0 * np.log(uniform(half)))  # u in (0, 1]: the log is finite
    angle = 2.0 * math.pi * uniform(half)
    return np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:n]


class SecurePoissonSampler(UniformWithReplacementSampler):  # type: ignore[misc]
    """Opacus' Poisson batch sampler with each inclusion drawn from `os.urandom`."""

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.steps):
            yield np.flatnonzero(uniform(self.num_samples) < self.sample_rate).tolist()


class _SecureNoise:
    """Mixin for a `DPOptimizer` class: its noise comes from `normal` (the CSPRNG)."""

    params: list[torch.nn.Parameter]
    noise_multiplier: float
    max_grad_norm: float

    def add_noise(self) -> None:
        std = self.noise_multiplier * self.max_grad_norm
        for p in self.params:
            summed: torch.Tensor = p.summed_grad  # type: ignore[attr-defined]
            _check_processed_flag(summed)
            noise = torch.from_numpy(normal(tuple(summed.shape), std)).to(summed)
            p.grad = (summed + noise).view_as(p)
            _mark_as_processed(summed)


@functools.cache
def _secure(cls: type[DPOptimizer]) -> type[DPOptimizer]:
    return type(f"Secure{cls.__name__}", (_SecureNoise, cls), {})


class SecurePrivacyEngine(PrivacyEngine):  # type: ignore[misc]
    """Opacus' `PrivacyEngine` whose sampling and noise come from the OS CSPRNG (see module)."""

    def __init__(self, *, accountant: str = "rdp") -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Secure RNG turned off": it is not
            super().__init__(accountant=accountant, secure_mode=False)

    def _prepare_data_loader(
        self, data_loader: DataLoader[Any], *, poisson_sampling: bool, distributed: bool, **kw: Any
    ) -> DataLoader[Any]:
        if not poisson_sampling or distributed:
            raise ValueError("DP secure mode runs Poisson sampling in one process only")
        loader = super()._prepare_data_loader(
            data_loader, poisson_sampling=True, distributed=False, **kw
        )
        plain = loader.batch_sampler
        sampler = SecurePoissonSampler(
            num_samples=plain.num_samples, sample_rate=plain.sample_rate, steps=plain.steps
        )
        # Opacus' loader with its collate function (which handles empty batches), our sampler.
        return DataLoader(loader.dataset, batch_sampler=sampler, collate_fn=loader.collate_fn)

    def _prepare_optimizer(
        self,
        *,
        optimizer: torch.optim.Optimizer,
        noise_multiplier: float,
        max_grad_norm: float,
        expected_batch_size: int,
        loss_reduction: str = "mean",
        distributed: bool = False,
        clipping: str = "flat",
        noise_generator: Any = None,
        grad_sample_mode: str = "hooks",
        **kw: Any,
    ) -> DPOptimizer:
        if noise_generator is not None:
            raise ValueError("a noise generator cannot be chosen in DP secure mode")
        if isinstance(optimizer, DPOptimizer):
            optimizer = optimizer.original_optimizer
        cls = get_optimizer_class(
            clipping=clipping, distributed=distributed, grad_sample_mode=grad_sample_mode
        )
        return _secure(cls)(
            optimizer=optimizer,
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
            expected_batch_size=expected_batch_size,
            loss_reduction=loss_reduction,
            generator=None,
            secure_mode=True,
            **kw,
        )


def privacy_engine(*, secure: bool) -> PrivacyEngine:
    """The RDP-accounted privacy engine, secure (OS CSPRNG) or fast (torch's generator)."""
    if secure:
        return SecurePrivacyEngine(accountant="rdp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the secure-mode reminder: it is a setting
        return PrivacyEngine(accountant="rdp", secure_mode=False)
