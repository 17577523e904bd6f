"""Homomorphic encryption (TenSEAL CKKS) for federated aggregation: encrypt, add, decrypt.

Clients encrypt their weighted update with the region's public context; the aggregator only
adds ciphertexts (it never holds the secret key); key holders decrypt the sum. A vector
longer than the slot count is split into several ciphertexts ("chunks"). Every encrypted
vector carries the key id of the context it was made under, so a ciphertext under another
key is refused instead of decrypting to garbage.

CKKS is approximate: with the default parameters a decrypted sum of 50 ciphertexts differs
from the exact one by at most ~5e-8 per coordinate (the precision is absolute, not
relative), and every coordinate of an input and of a sum must stay within
`value_bound(context)` (2**18 by default): inputs beyond it are refused, a sum beyond it
may wrap silently, which only the senders can rule out (e.g. FedAvg shares as weights).
"""

from __future__ import annotations

import hashlib
import re
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import tenseal as ts

from atlasrec.errors import AtlasRecError, InvalidInputError

Context = Any
"""A `tenseal.Context` (TenSEAL ships no type information)."""

# SEAL's largest total coefficient-modulus bit count for 128-bit classical security
# (HomomorphicEncryption.org standard, ternary secret), by polynomial modulus degree.
SECURITY_128_MAX_BITS = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}


class KeyUnavailableError(AtlasRecError):
    """The secret key needed for this operation is not held here (e.g. by an aggregator)."""


class KeyMismatchError(InvalidInputError):
    """A ciphertext was made under another key than the context it is used with."""


@dataclass(frozen=True)
class CkksParams:
    """CKKS parameters for addition-only aggregation at 128-bit security.

    The default, degree 4096 with coefficient moduli (60, 49) and scale 2**40, was chosen by
    measurement (`scripts/bench federation --sweep`, docs/benchmarks.md, "Encrypted
    aggregation"): 50 tenants, a 100,000-parameter update with entries ~N(0, 0.01) times the
    tenant's FedAvg share. Addition needs no multiplicative depth, so one data prime plus
    the special prime suffices, and a ciphertext's size follows the data prime's bits, not
    the degree: 3.2 MB for the 0.4 MB float32 update (8.0x; 8.2x at degree 8192, 8.5x at
    16384). Of the candidates within the 128-bit bound this one has the smallest error
    (5.7e-6 relative to the average's largest coordinate, against 1.2e-5 at degree 8192 and
    1.9e-5 at 16384: CKKS noise grows with the degree) at the same speed (an aggregator
    round of 50 updates: 0.17-0.21 s for all three). Smaller data primes save little space
    and cost precision: (50, 50) at scale 2**35 is 10% smaller with error 1.5e-4, (40, 40) at
    2**30 25% smaller with 6.1e-3, over the 1e-3 target. The 60-bit data prime leaves 2**20
    over the scale; keeping a bit for the sign and one for the encoding's rounding,
    `max_abs` = 2**18 bounds every coordinate of an input and of a sum.
    """

    poly_modulus_degree: int = 4096
    coeff_mod_bit_sizes: tuple[int, ...] = (60, 49)
    global_scale_bits: int = 40

    def __post_init__(self) -> None:
        limit = SECURITY_128_MAX_BITS.get(self.poly_modulus_degree)
        if limit is None:
            raise InvalidInputError(
                f"poly_modulus_degree must be one of {sorted(SECURITY_128_MAX_BITS)}, "
                f"not {self.poly_modulus_degree}"
            )
        if len(self.coeff_mod_bit_sizes) < 2:
            raise InvalidInputError("coeff_mod_bit_sizes needs a data prime and a special prime")
        if sum(self.coeff_mod_bit_sizes) > limit:
            raise InvalidInputError(
                f"coefficient moduli of {sum(self.coeff_mod_bit_sizes)} bits exceed the "
                f"128-bit security bound of {limit} bits for degree {self.poly_modulus_degree}"
            )
        if not 20 <= self.global_scale_bits <= self.coeff_mod_bit_sizes[0] - 3:
            raise InvalidInputError(
                f"global_scale_bits must be in [20, {self.coeff_mod_bit_sizes[0] - 3}] "
                "to leave headroom in the first coefficient modulus"
            )

    @property
    def slot_count(self) -> int:
        """Values per ciphertext."""
        return self.poly_modulus_degree // 2

    @property
    def max_abs(self) -> float:
        """Largest absolute value of any coordinate, of an input or of a sum."""
        return float(2 ** (self.coeff_mod_bit_sizes[0] - self.global_scale_bits - 2))


def new_context(params: CkksParams | None = None) -> Context:
    """A fresh CKKS context holding a new secret key."""
    p = params or CkksParams()
    context = ts.context(
        ts.SCHEME_TYPE.CKKS,
        poly_modulus_degree=p.poly_modulus_degree,
        coeff_mod_bit_sizes=list(p.coeff_mod_bit_sizes),
        n_threads=1,
    )
    context.global_scale = 2.0**p.global_scale_bits
    return context


def public_bytes(context: Context) -> bytes:
    """The context serialised without its secret key (what an aggregator or client gets)."""
    data: bytes = context.serialize(
        save_public_key=True, save_secret_key=False, save_galois_keys=False, save_relin_keys=False
    )
    return data


def secret_bytes(context: Context) -> bytes:
    """The context serialised with its secret key (for key holders' storage only)."""
    if not context.has_secret_key():
        raise KeyUnavailableError("this context holds no secret key to serialise")
    data: bytes = context.serialize(
        save_public_key=True, save_secret_key=True, save_galois_keys=False, save_relin_keys=False
    )
    return data


def load_context(data: bytes) -> Context:
    """A context from `public_bytes` or `secret_bytes`."""
    try:
        context = ts.context_from(data, n_threads=1)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise InvalidInputError(f"not a valid serialised CKKS context: {exc}") from None
    if not context.has_public_key():
        raise InvalidInputError("not a valid serialised CKKS context: no public key")
    return context


def key_id(context: Context) -> str:
    """Fingerprint of the public context (parameters, scale and public key), hex SHA-256."""
    return hashlib.sha256(public_bytes(context)).hexdigest()


def slot_count(context: Context) -> int:
    """Values per ciphertext under this context."""
    degree: int = context.data.seal_context().first_context_data().parms().poly_modulus_degree()
    return degree // 2


def value_bound(context: Context) -> float:
    """Largest absolute value of any coordinate, of an input or of a sum, under this context."""
    bits: int = context.data.seal_context().first_context_data().total_coeff_modulus_bit_count()
    return float(2.0 ** (bits - 2) / context.global_scale)


_MAGIC = b"AHEV"
_VERSION = 1
_HEADER = struct.Struct(">4sBQ32sQI")  # magic, version, total size, key id, length, chunks
_CHUNK = struct.Struct(">I")
_CRC = struct.Struct(">I")
_KEY_ID = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class EncryptedVector:
    """A CKKS-encrypted flat vector: serialised ciphertext chunks, plaintext length, key id."""

    key_id: str
    length: int
    chunks: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not _KEY_ID.fullmatch(self.key_id):
            raise InvalidInputError(f"key id must be 64 hex digits, not {self.key_id!r}")
        if self.length <= 0 or not self.chunks:
            raise InvalidInputError("an encrypted vector holds at least one value and one chunk")

    def to_bytes(self) -> bytes:
        """One self-describing blob: header, length-prefixed chunks, CRC-32 of all before it."""
        size = _HEADER.size + sum(_CHUNK.size + len(c) for c in self.chunks) + _CRC.size
        parts = [
            _HEADER.pack(
                _MAGIC,
                _VERSION,
                size,
                bytes.fromhex(self.key_id),
                self.length,
                len(self.chunks),
            )
        ]
        for chunk in self.chunks:
            parts += [_CHUNK.pack(len(chunk)), chunk]
        crc = 0
        for part in parts:
            crc = zlib.crc32(part, crc)
        return b"".join([*parts, _CRC.pack(crc)])

    @classmethod
    def from_bytes(cls, data: bytes) -> EncryptedVector:
        """Parse `to_bytes` output; a damaged blob raises InvalidInputError saying how."""
        view = memoryview(data)
        if len(view) < _HEADER.size + _CRC.size:
            raise InvalidInputError(
                f"encrypted vector truncated: {len(view)} bytes, a header alone is "
                f"{_HEADER.size + _CRC.size}"
            )
        magic, version, size, kid, length, count = _HEADER.unpack_from(view)
        if magic != _MAGIC:
            raise InvalidInputError("not an encrypted vector (bad magic bytes)")
        if version != _VERSION:
            raise InvalidInputError(
                f"encrypted vector format version {version} is not supported (expected {_VERSION})"
            )
        if size != len(view):
            raise InvalidInputError(
                f"encrypted vector truncated or padded: {len(view)} bytes, header says {size}"
            )
        (crc,) = _CRC.unpack_from(view, size - _CRC.size)
        if zlib.crc32(view[: size - _CRC.size]) != crc:
            raise InvalidInputError("encrypted vector is corrupted (CRC-32 mismatch)")
        chunks: list[bytes] = []
        offset = _HEADER.size
        for i in range(count):
            if offset + _CHUNK.size > size - _CRC.size:
                raise InvalidInputError(f"encrypted vector framing broken before chunk {i}")
            (n,) = _CHUNK.unpack_from(view, offset)
            offset += _CHUNK.size
            if offset + n > size - _CRC.size:
                raise InvalidInputError(f"encrypted vector framing broken in chunk {i}")
            chunks.append(bytes(view[offset : offset + n]))
            offset += n
        if offset != size - _CRC.size:
            raise InvalidInputError("encrypted vector framing broken: bytes after the last chunk")
        return cls(kid.hex(), length, tuple(chunks))


def encrypt(context: Context, vector: npt.ArrayLike) -> EncryptedVector:
    """Encrypt a flat vector (a public-only context is enough)."""
    values = np.asarray(vector, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise InvalidInputError(
            f"can only encrypt a non-empty flat vector, not shape {values.shape}"
        )
    if not np.all(np.isfinite(values)):
        raise InvalidInputError("cannot encrypt NaN or infinite values")
    bound = value_bound(context)
    largest = float(np.max(np.abs(values)))
    if largest > bound:
        raise InvalidInputError(
            f"cannot encrypt |value| {largest:.4g}: CKKS headroom under this context is {bound:.4g}"
        )
    slots = slot_count(context)
    chunks = []
    for start in range(0, values.size, slots):
        try:
            encrypted = ts.ckks_vector(context, values[start : start + slots].tolist())
        except (ValueError, TypeError, RuntimeError) as exc:
            raise InvalidInputError(f"cannot encrypt under this context: {exc}") from None
        chunks.append(encrypted.serialize())
    return EncryptedVector(key_id(context), int(values.size), tuple(chunks))


def _check_key(context: Context, enc: EncryptedVector, expected: str) -> None:
    if enc.key_id != expected:
        raise KeyMismatchError(
            f"ciphertext is under key {enc.key_id[:12]}, this context holds key {expected[:12]}"
        )


def _load_chunks(context: Context, enc: EncryptedVector) -> list[Any]:
    slots = slot_count(context)
    expected = -(-enc.length // slots)
    if len(enc.chunks) != expected:
        raise InvalidInputError(
            f"encrypted vector of length {enc.length} has {len(enc.chunks)} chunks, "
            f"expected {expected} of {slots} slots"
        )
    loaded = []
    for i, chunk in enumerate(enc.chunks):
        try:
            vector = ts.ckks_vector_from(context, chunk)
        except (ValueError, TypeError, RuntimeError) as exc:
            raise InvalidInputError(
                f"ciphertext chunk {i} is not a valid CKKS vector: {exc}"
            ) from None
        want = min(slots, enc.length - i * slots)
        if vector.size() != want:
            raise InvalidInputError(
                f"ciphertext chunk {i} holds {vector.size()} values, not {want}"
            )
        loaded.append(vector)
    return loaded


def add(context: Context, vectors: Sequence[EncryptedVector]) -> EncryptedVector:
    """Sum of same-length encrypted vectors under the context's key (no secret key needed)."""
    if not vectors:
        raise InvalidInputError("nothing to add: no encrypted vectors")
    expected = key_id(context)
    length = vectors[0].length
    for enc in vectors:
        _check_key(context, enc, expected)
        if enc.length != length:
            raise InvalidInputError(
                f"cannot add encrypted vectors of lengths {length} and {enc.length}"
            )
    total = _load_chunks(context, vectors[0])
    for enc in vectors[1:]:
        for i, chunk in enumerate(_load_chunks(context, enc)):
            try:
                total[i].add_(chunk)
            except (ValueError, TypeError, RuntimeError) as exc:
                raise InvalidInputError(f"cannot add ciphertext chunk {i}: {exc}") from None
    return EncryptedVector(expected, length, tuple(c.serialize() for c in total))


def decrypt(context: Context, enc: EncryptedVector) -> npt.NDArray[np.float64]:
    """Decrypt with a key holder's context (one that holds the secret key)."""
    if not context.has_secret_key():
        raise KeyUnavailableError(
            "this context holds no secret key: only the key holders can decrypt"
        )
    _check_key(context, enc, key_id(context))
    parts = [np.asarray(chunk.decrypt(), dtype=np.float64) for chunk in _load_chunks(context, enc)]
    return np.concatenate(parts)
