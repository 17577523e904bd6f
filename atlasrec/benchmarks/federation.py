"""Federation benchmarks (issue #4): the cost of encrypted aggregation.

    scripts/bench federation [--quick] [--sweep]
    python -m atlasrec.benchmarks.federation [--quick] [--sweep] [--out FILE]

`encrypted_aggregation` simulates one round of a regional aggregator with N tenants, each
sending a float32 update of P backbone parameters pre-multiplied by its FedAvg weight (its
share of the examples), side by side with the plaintext baseline in the same run:

- client: encrypt the weighted update under the region's public context and serialise it;
- aggregator, encrypted: deserialise every client blob (parse the framing, then load the
  ciphertexts into TenSEAL, which `add` does), add the ciphertexts, serialise the sum
  (`privacy.he`); plaintext: read every float32 array and take the weighted average;
- key holder: deserialise and decrypt the sum, divide by the total weight; its error
  against the plaintext average.

`parameter_sweep` (`--sweep`) measures the same for several CKKS parameter sets: how the
default `CkksParams` was chosen. Every time is a median over repeats. Results go to stdout
as JSON (and to --out). More benchmark functions (e.g. a full Flower round) belong here,
one function per measurement, selected in `main`.
"""

from __future__ import annotations

import argparse
import os
import platform as host
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import tenseal as ts

from atlasrec.benchmarks.output import emit
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

Vector = npt.NDArray[np.float64]


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


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


def _encrypted_blob(context: Any, update: npt.NDArray[np.float64]) -> bytes:
    return encrypt(context, update).to_bytes()


def encrypted_aggregation(
    tenants: int, parameters: int, repeats: int, params: CkksParams | None = None
) -> dict[str, Any]:
    """One aggregation round, encrypted and in plaintext, timed side by side."""
    secret = new_context(params)
    public = load_context(public_bytes(secret))
    weights, updates = simulated_round(tenants, parameters)
    total_weight = float(weights.sum())
    exact: Vector = (
        sum(
            (w * u.astype(np.float64) for w, u in zip(weights, updates, strict=True)),
            start=np.zeros(parameters),
        )
        / total_weight
    )

    encrypt_s, blobs = [], []
    for w, u in zip(weights, updates, strict=True):
        seconds, blob = _timed(partial(_encrypted_blob, public, w * u))
        encrypt_s.append(seconds)
        blobs.append(blob)
    plain_blobs = [u.tobytes() for u in updates]

    def encrypted_round() -> tuple[float, float, float, bytes]:
        parse_s, received = _timed(lambda: [EncryptedVector.from_bytes(b) for b in blobs])
        add_s, summed = _timed(lambda: add(public, received))
        write_s, out = _timed(summed.to_bytes)
        return parse_s, add_s, write_s, out

    def seal_load() -> list[Any]:  # the part of `add` that is TenSEAL parsing ciphertexts
        return [
            ts.ckks_vector_from(public, c)
            for b in blobs
            for c in EncryptedVector.from_bytes(b).chunks
        ]

    def plaintext_round() -> Vector:
        arrays = [np.frombuffer(b, dtype=np.float32) for b in plain_blobs]
        result: Vector = np.average(np.stack(arrays), axis=0, weights=weights)
        return result

    def key_holder(blob: bytes) -> Vector:
        result: Vector = decrypt(secret, EncryptedVector.from_bytes(blob)) / total_weight
        return result

    rounds, plain_s, decrypt_s, load_s = [], [], [], []
    summed_blob, average, plain_average = b"", exact, exact
    for _ in range(repeats):  # alternate the two so load on the machine hits both alike
        read_s, add_s, write_s, summed_blob = encrypted_round()
        rounds.append((read_s, add_s, write_s, read_s + add_s + write_s))
        seconds, plain_average = _timed(plaintext_round)
        plain_s.append(seconds)
        seconds, average = _timed(partial(key_holder, summed_blob))
        decrypt_s.append(seconds)
        load_s.append(_timed(seal_load)[0] - rounds[-1][0])

    error = np.abs(average - exact)
    round_s = _median([r[3] for r in rounds])
    plain_round_s = _median(plain_s)
    return {
        "tenants": tenants,
        "parameters": parameters,
        "repeats": repeats,
        "ckks": {
            "poly_modulus_degree": (params or CkksParams()).poly_modulus_degree,
            "coeff_mod_bit_sizes": list((params or CkksParams()).coeff_mod_bit_sizes),
            "global_scale_bits": (params or CkksParams()).global_scale_bits,
        },
        "client_encrypt_s": _median(encrypt_s),
        "update_bytes": len(plain_blobs[0]),
        "ciphertext_bytes": len(blobs[0]),
        "ciphertext_expansion": len(blobs[0]) / len(plain_blobs[0]),
        "aggregator_round_s": round_s,
        "aggregator_parse_s": _median([r[0] for r in rounds]),
        "aggregator_load_and_add_s": _median([r[1] for r in rounds]),
        "aggregator_of_which_ciphertext_loading_s": _median(load_s),
        "aggregator_serialize_s": _median([r[2] for r in rounds]),
        "aggregator_round_s_all": [round(r[3], 4) for r in rounds],
        "plaintext_round_s": plain_round_s,
        "encrypted_over_plaintext": round_s / plain_round_s,
        "key_holder_decrypt_s": _median(decrypt_s),
        "max_abs_error": float(error.max()),
        "relative_error_inf": float(error.max() / np.abs(exact).max()),
        "relative_error_l2": float(np.linalg.norm(average - exact) / np.linalg.norm(exact)),
        "plaintext_relative_error_inf": float(
            np.abs(plain_average - exact).max() / np.abs(exact).max()
        ),
    }


def parameter_sweep(
    candidates: Sequence[CkksParams], tenants: int, parameters: int, repeats: int
) -> list[dict[str, Any]]:
    """`encrypted_aggregation` for each CKKS parameter set."""
    return [encrypted_aggregation(tenants, parameters, repeats, p) for p in candidates]


def flower_rounds(tenants: int, rounds: int, *, encrypt: bool) -> dict[str, Any]:
    """Full Flower rounds of one region's real aggregator against `tenants` scripted clients.

    Each round: the roster query, every client's (synthetic) update weighted and, with
    `encrypt`, CKKS-encrypted, the guards, the sum, the published backbone version and the
    ledger record. Clients run in threads of this process (`server.local_grid.LocalGrid`);
    no training, so the time is the federation machinery's own.
    """
    import logging
    import tempfile

    from atlasrec.platform import Platform
    from atlasrec.settings import Settings
    from atlasrec.tenancy import Region, SharingPolicy
    from simulations.scripted import Script, run_scripted

    logging.getLogger("flwr").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="atlasrec-bench-fed-") as home:
        platform = Platform(Settings(home=Path(home)))
        try:
            for k in range(tenants):
                platform.create_tenant(
                    f"sim-{k:03d}", region=Region.EU, sharing=SharingPolicy.REGIONAL, actor="bench"
                )
            started = time.perf_counter()
            result = run_scripted(
                platform, Region.EU, Script(), rounds=rounds, timeout=600, encrypt=encrypt
            )
            wall = time.perf_counter() - started
            latest = result.backbone_version
            stored = Path(home) / "backbones" / "region-eu" / str(latest) / "backbone.bin"
            size = stored.stat().st_size
        finally:
            platform.close()
    seconds = [entry["seconds"] for entry in result.rounds]
    return {
        "tenants": tenants,
        "rounds": rounds,
        "encrypted": encrypt,
        "participants": [len(e["participants"]) for e in result.rounds],
        "round_s": seconds,
        "median_round_s": _median(seconds),
        "wall_s": round(wall, 2),
        "aggregate_bytes": size,
    }


def _summary(result: dict[str, Any]) -> str:
    ckks = result["ckks"]
    return (
        f"N={ckks['poly_modulus_degree']} q={ckks['coeff_mod_bit_sizes']} "
        f"scale=2^{ckks['global_scale_bits']} tenants={result['tenants']}: "
        f"encrypt {result['client_encrypt_s'] * 1e3:.0f} ms, "
        f"{result['ciphertext_bytes'] / 1e6:.2f} MB ({result['ciphertext_expansion']:.1f}x), "
        f"round {result['aggregator_round_s']:.3f} s vs plaintext "
        f"{result['plaintext_round_s'] * 1e3:.1f} ms "
        f"({result['encrypted_over_plaintext']:.0f}x), "
        f"decrypt {result['key_holder_decrypt_s'] * 1e3:.0f} ms, "
        f"rel. error {result['relative_error_inf']:.1e}"
    )


def main(argv: list[str] | None = None) -> None:
    """Run the benchmarks and print their results as JSON (and write them with --out)."""
    parser = argparse.ArgumentParser(prog="atlasrec-bench-federation")
    parser.add_argument("--quick", action="store_true", help="10,000 parameters, 3 repeats")
    parser.add_argument("--sweep", action="store_true", help="compare CKKS parameter sets")
    parser.add_argument("--out", type=Path, help="write the JSON results here")
    parser.add_argument(
        "--flower-rounds",
        type=int,
        default=0,
        help="also run this many full Flower rounds per tenant count, encrypted and plaintext",
    )
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--parameters", type=int, default=PARAMETERS)
    parser.add_argument("--tenants", type=int, nargs="+", default=list(TENANTS))
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else args.repeats
    parameters = 10_000 if args.quick else args.parameters

    started = time.perf_counter()
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{host.machine()} {os.cpu_count()} cores, {host.platform()}",
        "versions": {name: version(name) for name in ("tenseal", "numpy")},
        "load_average_start": os.getloadavg(),
    }
    if args.sweep:
        results["sweep"] = parameter_sweep(SWEEP, max(args.tenants), parameters, repeats)
        for result in results["sweep"]:
            print(_summary(result), file=sys.stderr)
    else:
        results["encrypted_aggregation"] = []
        for tenants in args.tenants:
            result = encrypted_aggregation(tenants, parameters, repeats)
            results["encrypted_aggregation"].append(result)
            print(_summary(result), file=sys.stderr)
            if tenants == TARGET_TENANTS and parameters == PARAMETERS:
                met = result["aggregator_round_s"] <= TARGET_ROUND_S
                results["target"] = {
                    "tenants": TARGET_TENANTS,
                    "parameters": PARAMETERS,
                    "max_round_s": TARGET_ROUND_S,
                    "median_round_s": result["aggregator_round_s"],
                    "met": met,
                }
                print(
                    f"target: {TARGET_TENANTS} tenants x {PARAMETERS:,} parameters in "
                    f"<= {TARGET_ROUND_S} s per round: {'met' if met else 'NOT met'} "
                    f"(median {result['aggregator_round_s']:.3f} s)",
                    file=sys.stderr,
                )
    if args.flower_rounds:
        results["flower_rounds"] = []
        for tenants in args.tenants:
            for encrypt in (False, True):
                result = flower_rounds(tenants, args.flower_rounds, encrypt=encrypt)
                results["flower_rounds"].append(result)
                print(
                    f"flower rounds, {tenants} tenants, "
                    f"{'encrypted' if encrypt else 'plaintext'}: median round "
                    f"{result['median_round_s']:.3f} s ({result['round_s']}), aggregate "
                    f"{result['aggregate_bytes'] / 1e6:.2f} MB",
                    file=sys.stderr,
                )
    results["load_average_end"] = os.getloadavg()
    results["wall_s"] = round(time.perf_counter() - started, 1)
    emit(results, args.out)


if __name__ == "__main__":
    main()
