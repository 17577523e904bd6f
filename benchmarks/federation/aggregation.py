"""One aggregation round, CKKS-encrypted and in plaintext, timed side by side."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt
import tenseal as ts

from benchmarks.federation.fixtures import simulated_round
from benchmarks.stats import median
from privacy.he import (
    CkksParams,
    EncryptedVector,
    add,
    decrypt,
    encrypt,
    load_context,
    new_context,
    public_bytes,
)

Vector = npt.NDArray[np.float64]


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


@dataclass
class Round:
    """A round's inputs as each party holds them: contexts, client blobs, the exact average."""

    secret: Any
    public: Any
    weights: npt.NDArray[np.float64]
    exact: Vector
    blobs: list[bytes] = field(default_factory=list)
    plain_blobs: list[bytes] = field(default_factory=list)
    encrypt_s: list[float] = field(default_factory=list)

    def encrypted(self) -> tuple[float, float, float, bytes]:
        """The aggregator's encrypted round: (parse, load and add, serialise seconds; sum)."""
        parse_s, received = _timed(lambda: [EncryptedVector.from_bytes(b) for b in self.blobs])
        add_s, summed = _timed(lambda: add(self.public, received))
        write_s, out = _timed(summed.to_bytes)
        return parse_s, add_s, write_s, out

    def seal_load(self) -> list[Any]:
        """The part of `add` that is TenSEAL parsing ciphertexts."""
        return [
            ts.ckks_vector_from(self.public, c)
            for b in self.blobs
            for c in EncryptedVector.from_bytes(b).chunks
        ]

    def plaintext(self) -> Vector:
        """The plaintext baseline: read every float32 array, take the weighted average."""
        arrays = [np.frombuffer(b, dtype=np.float32) for b in self.plain_blobs]
        result: Vector = np.average(np.stack(arrays), axis=0, weights=self.weights)
        return result

    def key_holder(self, blob: bytes) -> Vector:
        """Decrypt the sum and divide by the total weight."""
        total: float = float(self.weights.sum())
        result: Vector = decrypt(self.secret, EncryptedVector.from_bytes(blob)) / total
        return result


def _encrypted_blob(context: Any, update: npt.NDArray[np.float64]) -> bytes:
    return encrypt(context, update).to_bytes()


def prepare(tenants: int, parameters: int, params: CkksParams | None) -> Round:
    """Keys, the simulated updates, and each client's encrypted blob (timed)."""
    secret = new_context(params)
    public = load_context(public_bytes(secret))
    weights, updates = simulated_round(tenants, parameters)
    exact: Vector = sum(
        (w * u.astype(np.float64) for w, u in zip(weights, updates, strict=True)),
        start=np.zeros(parameters),
    ) / float(weights.sum())
    prepared = Round(secret, public, weights, exact)
    for w, u in zip(weights, updates, strict=True):
        seconds, blob = _timed(partial(_encrypted_blob, public, w * u))
        prepared.encrypt_s.append(seconds)
        prepared.blobs.append(blob)
    prepared.plain_blobs = [u.tobytes() for u in updates]
    return prepared


@dataclass
class Timings:
    """Per repeat: the encrypted round's parts, the plaintext round, decryption, loading."""

    rounds: list[tuple[float, float, float, float]] = field(default_factory=list)
    plain_s: list[float] = field(default_factory=list)
    decrypt_s: list[float] = field(default_factory=list)
    load_s: list[float] = field(default_factory=list)


def time_rounds(prepared: Round, repeats: int) -> tuple[Timings, Vector, Vector]:
    """Alternate the two rounds `repeats` times; timings, decrypted and plaintext averages."""
    timings = Timings()
    average, plain_average = prepared.exact, prepared.exact
    for _ in range(repeats):  # alternate the two so load on the machine hits both alike
        read_s, add_s, write_s, summed_blob = prepared.encrypted()
        timings.rounds.append((read_s, add_s, write_s, read_s + add_s + write_s))
        seconds, plain_average = _timed(prepared.plaintext)
        timings.plain_s.append(seconds)
        seconds, average = _timed(partial(prepared.key_holder, summed_blob))
        timings.decrypt_s.append(seconds)
        timings.load_s.append(_timed(prepared.seal_load)[0] - timings.rounds[-1][0])
    return timings, average, plain_average


def _ckks(params: CkksParams | None) -> dict[str, Any]:
    used = params or CkksParams()
    return {
        "poly_modulus_degree": used.poly_modulus_degree,
        "coeff_mod_bit_sizes": list(used.coeff_mod_bit_sizes),
        "global_scale_bits": used.global_scale_bits,
    }


def _errors(exact: Vector, average: Vector, plain_average: Vector) -> dict[str, float]:
    error = np.abs(average - exact)
    return {
        "max_abs_error": float(error.max()),
        "relative_error_inf": float(error.max() / np.abs(exact).max()),
        "relative_error_l2": float(np.linalg.norm(average - exact) / np.linalg.norm(exact)),
        "plaintext_relative_error_inf": float(
            np.abs(plain_average - exact).max() / np.abs(exact).max()
        ),
    }


def encrypted_aggregation(
    tenants: int, parameters: int, repeats: int, params: CkksParams | None = None
) -> dict[str, Any]:
    """One aggregation round, encrypted and in plaintext, timed side by side."""
    prepared = prepare(tenants, parameters, params)
    timings, average, plain_average = time_rounds(prepared, repeats)
    rounds, blobs, plain_blobs = timings.rounds, prepared.blobs, prepared.plain_blobs
    round_s = median([r[3] for r in rounds])
    plain_round_s = median(timings.plain_s)
    return {
        "tenants": tenants,
        "parameters": parameters,
        "repeats": repeats,
        "ckks": _ckks(params),
        "client_encrypt_s": median(prepared.encrypt_s),
        "update_bytes": len(plain_blobs[0]),
        "ciphertext_bytes": len(blobs[0]),
        "ciphertext_expansion": len(blobs[0]) / len(plain_blobs[0]),
        "aggregator_round_s": round_s,
        "aggregator_parse_s": median([r[0] for r in rounds]),
        "aggregator_load_and_add_s": median([r[1] for r in rounds]),
        "aggregator_of_which_ciphertext_loading_s": median(timings.load_s),
        "aggregator_serialize_s": median([r[2] for r in rounds]),
        "aggregator_round_s_all": [round(r[3], 4) for r in rounds],
        "plaintext_round_s": plain_round_s,
        "encrypted_over_plaintext": round_s / plain_round_s,
        "key_holder_decrypt_s": median(timings.decrypt_s),
        **_errors(prepared.exact, average, plain_average),
    }


def parameter_sweep(
    candidates: Sequence[CkksParams], tenants: int, parameters: int, repeats: int
) -> list[dict[str, Any]]:
    """`encrypted_aggregation` for each CKKS parameter set."""
    return [encrypted_aggregation(tenants, parameters, repeats, p) for p in candidates]
