"""One-line summaries of the federation benchmark's measurements (printed on stderr)."""

from __future__ import annotations

from typing import Any


def summary(result: dict[str, Any]) -> str:
    """An aggregation result in a line: CKKS parameters, sizes, times, error."""
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


def target_line(target: dict[str, Any]) -> str:
    """Whether the round-time target was met."""
    return (
        f"target: {target['tenants']} tenants x {target['parameters']:,} parameters in "
        f"<= {target['max_round_s']} s per round: {'met' if target['met'] else 'NOT met'} "
        f"(median {target['median_round_s']:.3f} s)"
    )


def flower_line(result: dict[str, Any]) -> str:
    """A Flower rounds result in a line."""
    return (
        f"flower rounds, {result['tenants']} tenants, "
        f"{'encrypted' if result['encrypted'] else 'plaintext'}: median round "
        f"{result['median_round_s']:.3f} s ({result['round_s']}), aggregate "
        f"{result['aggregate_bytes'] / 1e6:.2f} MB"
    )
