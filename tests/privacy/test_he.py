"""CKKS aggregation: sums are right, only key holders decrypt, damaged blobs are refused."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from atlasrec.errors import InvalidInputError
from privacy.he import (
    CkksParams,
    Context,
    EncryptedVector,
    KeyMismatchError,
    KeyUnavailableError,
    add,
    decrypt,
    encrypt,
    key_id,
    load_context,
    new_context,
    public_bytes,
    secret_bytes,
    slot_count,
)

SLOTS = CkksParams().slot_count


@pytest.fixture(scope="module")
def secret() -> Context:
    return new_context()


@pytest.fixture(scope="module")
def public(secret: Context) -> Context:
    return load_context(public_bytes(secret))


@pytest.fixture(scope="module")
def blob(public: Context) -> bytes:
    return encrypt(public, np.arange(SLOTS + 7) / 100.0).to_bytes()


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


def test_a_vector_longer_than_the_slots_round_trips_through_bytes(
    public: Context, secret: Context
) -> None:
    x = np.random.default_rng(0).normal(0.0, 0.1, 2 * SLOTS + 5).astype(np.float32)
    enc = encrypt(public, x)
    assert len(enc.chunks) == 3 and enc.length == x.size
    back = EncryptedVector.from_bytes(enc.to_bytes())
    assert back == enc
    got = decrypt(secret, back)
    assert got.shape == x.shape
    assert relative_error(got, x) < 1e-6


weights = st.floats(0.01, 10.0)
scales = st.sampled_from([1e-3, 1e-2, 0.1, 1.0, 10.0])


@given(
    n=st.integers(1, 100),
    length=st.integers(1, 64),
    seed=st.integers(0, 2**32 - 1),
    data=st.data(),
)
@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_decrypted_weighted_sum_is_the_weighted_average(
    public: Context, secret: Context, n: int, length: int, seed: int, data: st.DataObject
) -> None:
    rng = np.random.default_rng(seed)
    w = np.array(data.draw(st.lists(weights, min_size=n, max_size=n)))
    scale = np.array(data.draw(st.lists(scales, min_size=n, max_size=n)))
    updates = rng.uniform(-1.0, 1.0, (n, length)) * scale[:, None]
    weighted = w[:, None] * updates
    want = weighted.sum(axis=0) / w.sum()
    # CKKS error is absolute: about 3e-9 per ciphertext, 3e-8 on a sum of 100.
    assume(np.max(np.abs(weighted.sum(axis=0))) > 1e-4)
    total = add(public, [encrypt(public, u) for u in weighted])
    got = decrypt(secret, total) / w.sum()
    assert relative_error(got, want) < 1e-3


def test_aggregation_uses_every_chunk(public: Context, secret: Context) -> None:
    a, b = np.full(SLOTS + 1, 0.25), np.linspace(-1.0, 1.0, SLOTS + 1)
    got = decrypt(secret, add(public, [encrypt(public, a), encrypt(public, b), encrypt(public, a)]))
    assert np.max(np.abs(got - (2 * a + b))) < 1e-6


def test_a_public_context_cannot_decrypt(public: Context, secret: Context) -> None:
    enc = encrypt(public, [1.0, 2.0, 3.0])
    with pytest.raises(KeyUnavailableError, match="no secret key"):
        decrypt(public, enc)
    again = load_context(public_bytes(load_context(public_bytes(secret))))
    assert not again.has_secret_key()
    with pytest.raises(KeyUnavailableError):
        decrypt(again, enc)
    assert key_id(again) == key_id(secret) == enc.key_id
    np.testing.assert_allclose(decrypt(secret, enc), [1.0, 2.0, 3.0], atol=1e-6)


def test_a_secret_context_survives_serialisation(secret: Context) -> None:
    restored = load_context(secret_bytes(secret))
    assert key_id(restored) == key_id(secret)
    np.testing.assert_allclose(decrypt(restored, encrypt(secret, [0.5])), [0.5], atol=1e-6)
    with pytest.raises(KeyUnavailableError):
        secret_bytes(load_context(public_bytes(secret)))


def test_a_ciphertext_under_another_key_is_refused(public: Context, secret: Context) -> None:
    other = new_context()
    assert key_id(other) != key_id(secret)
    mine, theirs = encrypt(public, [1.0, 2.0]), encrypt(other, [1.0, 2.0])
    with pytest.raises(KeyMismatchError, match="under key"):
        decrypt(other, mine)
    with pytest.raises(KeyMismatchError):
        add(public, [mine, theirs])
    with pytest.raises(KeyMismatchError):
        add(other, [mine])


def test_only_equal_lengths_add(public: Context) -> None:
    with pytest.raises(InvalidInputError, match="lengths 2 and 3"):
        add(public, [encrypt(public, [1.0, 2.0]), encrypt(public, [1.0, 2.0, 3.0])])
    with pytest.raises(InvalidInputError, match="nothing to add"):
        add(public, [])


@pytest.mark.parametrize(
    "bad",
    [[], [[1.0, 2.0]], [float("nan")], [np.inf], [CkksParams().max_abs * 1.01]],
)
def test_unencryptable_inputs_are_refused(public: Context, bad: list[object]) -> None:
    with pytest.raises(InvalidInputError):
        encrypt(public, bad)


def test_values_at_the_bound_sum_exactly(public: Context, secret: Context) -> None:
    edge = CkksParams().max_abs
    x = np.array([edge, -edge, 1.0])
    got = decrypt(secret, add(public, [encrypt(public, x / 2), encrypt(public, x / 2)]))
    assert np.max(np.abs(got - x)) < 1e-3


@given(cut=st.integers(0, 10**9))
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_a_truncated_blob_is_refused(blob: bytes, cut: int) -> None:
    with pytest.raises(InvalidInputError, match="truncated"):
        EncryptedVector.from_bytes(blob[: cut % len(blob)])


@given(position=st.integers(0, 10**9), bit=st.integers(0, 7))
@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_a_flipped_bit_anywhere_is_refused(blob: bytes, position: int, bit: int) -> None:
    damaged = bytearray(blob)
    damaged[position % len(blob)] ^= 1 << bit
    with pytest.raises(InvalidInputError):
        EncryptedVector.from_bytes(bytes(damaged))


def test_damage_is_named(blob: bytes) -> None:
    with pytest.raises(InvalidInputError, match="bad magic"):
        EncryptedVector.from_bytes(b"XXXX" + blob[4:])
    with pytest.raises(InvalidInputError, match="version 2 is not supported"):
        EncryptedVector.from_bytes(blob[:4] + b"\x02" + blob[5:])
    with pytest.raises(InvalidInputError, match="CRC-32"):
        EncryptedVector.from_bytes(blob[:-100] + bytes(96) + blob[-4:])
    with pytest.raises(InvalidInputError, match="truncated or padded"):
        EncryptedVector.from_bytes(blob + b"\x00")
    with pytest.raises(InvalidInputError, match="truncated"):
        EncryptedVector.from_bytes(b"")


def test_well_framed_garbage_chunks_are_refused(public: Context, secret: Context) -> None:
    kid = key_id(public)
    junk = EncryptedVector.from_bytes(EncryptedVector(kid, 3, (b"junk",)).to_bytes())
    with pytest.raises(InvalidInputError, match="chunk 0 is not a valid CKKS vector"):
        decrypt(secret, junk)
    with pytest.raises(InvalidInputError, match="chunk 0"):
        add(public, [encrypt(public, [1.0, 2.0, 3.0]), junk])
    short = encrypt(public, [1.0, 2.0])
    with pytest.raises(InvalidInputError, match="holds 2 values, not 3"):
        decrypt(secret, EncryptedVector(kid, 3, short.chunks))
    with pytest.raises(InvalidInputError, match="expected 1"):
        decrypt(secret, EncryptedVector(kid, 3, short.chunks * 2))
    with pytest.raises(InvalidInputError, match="64 hex digits"):
        EncryptedVector("abc", 3, short.chunks)


def test_params_stay_within_128_bit_security() -> None:
    assert sum(CkksParams().coeff_mod_bit_sizes) <= 109
    with pytest.raises(InvalidInputError, match="security bound"):
        CkksParams(4096, (60, 60), 40)
    with pytest.raises(InvalidInputError, match="poly_modulus_degree"):
        CkksParams(3000, (30, 30), 25)
    with pytest.raises(InvalidInputError, match="global_scale_bits"):
        CkksParams(8192, (40, 40), 40)
    small = new_context(CkksParams(8192, (60, 40), 40))
    assert slot_count(small) == 4096
