"""The key service: CKKS key material per key domain (e.g. "region-eu", "global").

A domain's secret context lives in `<root>/<domain>.ckks` (mode 0600, folder 0700), created
once and never replaced: `ensure` takes an exclusive lock, so concurrent callers, in any
process, end with the same key. Aggregators get `public_context` only; `secret_context`
is for the key holders (the domain's tenants' clients). The file is framed with a magic
header and a SHA-256 digest, so a damaged file is reported as such, by name.

An aggregator on another machine gets `<root>/<domain>.public` instead (`export_public`,
framed the same way): its key service answers `public_context` from that file, and has no
secret context to give.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from atlasrec.errors import InvalidInputError
from atlasrec.files import write_atomic
from privacy.he import (
    CkksParams,
    Context,
    KeyUnavailableError,
    key_id,
    load_context,
    new_context,
    public_bytes,
    secret_bytes,
)

_DOMAIN = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_MAGIC = b"ATLASREC-CKKS-KEY\x01"
_SUFFIX = ".ckks"
_PUBLIC_MAGIC = b"ATLASREC-CKKS-PUB\x01"
_PUBLIC_SUFFIX = ".public"


class KeyFileError(InvalidInputError):
    """A key file is damaged, holds no secret key, or is readable by other users."""


def check_domain(domain: str) -> str:
    """The domain name, if it is a safe file name (lowercase letters, digits, '-', '_')."""
    if not isinstance(domain, str) or not _DOMAIN.fullmatch(domain):
        raise InvalidInputError(
            f"invalid key domain {domain!r}: 1-64 characters of a-z, 0-9, '-', '_', "
            "starting with a letter or digit"
        )
    return domain


def _unframe(path: Path, data: bytes, magic: bytes, what: str) -> tuple[Context, bytes]:
    """The context in a key file's bytes (magic, SHA-256, payload), and the payload."""
    head = len(magic) + hashlib.sha256().digest_size
    if len(data) < head or not data.startswith(magic):
        raise KeyFileError(f"key file {path} is not an AtlasRec CKKS {what} file")
    payload = data[head:]
    if hashlib.sha256(payload).digest() != data[len(magic) : head]:
        raise KeyFileError(f"key file {path} is corrupted (SHA-256 mismatch)")
    try:
        return load_context(payload), payload
    except InvalidInputError as exc:
        raise KeyFileError(f"key file {path}: {exc}") from None


class KeyService:
    """CKKS key material for named key domains under one root folder."""

    def __init__(self, root: Path, params: CkksParams | None = None) -> None:
        self.root = Path(root)
        self.params = params or CkksParams()
        self._cache: dict[str, tuple[str, bytes]] = {}
        self._public: dict[str, bytes] = {}

    def path(self, domain: str) -> Path:
        """The domain's key file."""
        return self.root / f"{check_domain(domain)}{_SUFFIX}"

    def public_path(self, domain: str) -> Path:
        """The domain's public key file (what an aggregator's key folder holds)."""
        return self.root / f"{check_domain(domain)}{_PUBLIC_SUFFIX}"

    def ensure(self, domain: str) -> str:
        """Create the domain's key unless it exists; its key id either way."""
        path = self.path(domain)
        if not path.exists():
            with self._lock(domain):
                if not path.exists():
                    context = new_context(self.params)
                    payload = secret_bytes(context)
                    write_atomic(path, _MAGIC + hashlib.sha256(payload).digest() + payload)
                    # mkstemp created the file 0600; say so explicitly in case that changes.
                    os.chmod(path, 0o600)
        return self.key_id(domain)

    def key_id(self, domain: str) -> str:
        """The domain's key id (fingerprint of its public context)."""
        return self._load(domain)[0]

    def public_context(self, domain: str) -> bytes:
        """The domain's serialised public context: encrypts and adds, cannot decrypt."""
        if not self.path(domain).exists() and self.public_path(domain).exists():
            return self._load_public(domain)
        return public_bytes(load_context(self._load(domain)[1]))

    def export_public(self, domain: str, root: Path) -> Path:
        """Write the domain's public context into another key folder (an aggregator's)."""
        payload = self.public_context(domain)
        path = KeyService(root).public_path(domain)
        write_atomic(path, _PUBLIC_MAGIC + hashlib.sha256(payload).digest() + payload)
        os.chmod(path, 0o644)  # public material: readable by the aggregator's service user
        return path

    def secret_context(self, domain: str) -> Context:
        """The domain's context with its secret key (key holders only); a fresh object."""
        return load_context(self._load(domain)[1])

    def _load(self, domain: str) -> tuple[str, bytes]:
        path = self.path(domain)
        if domain in self._cache:
            return self._cache[domain]
        try:
            mode = path.stat().st_mode
            data = path.read_bytes()
        except FileNotFoundError:
            raise KeyUnavailableError(f"no key for domain {domain!r} in {self.root}") from None
        if stat.S_IMODE(mode) & 0o077:
            raise KeyFileError(
                f"key file {path} is accessible by other users (mode "
                f"{stat.S_IMODE(mode):04o}); expected 0600"
            )
        context, payload = _unframe(path, data, _MAGIC, "key")
        if not context.has_secret_key():
            raise KeyFileError(f"key file {path} holds no secret key")
        self._cache[domain] = (key_id(context), payload)
        return self._cache[domain]

    def _load_public(self, domain: str) -> bytes:
        if domain in self._public:
            return self._public[domain]
        path = self.public_path(domain)
        data = path.read_bytes()
        context, _ = _unframe(path, data, _PUBLIC_MAGIC, "public key")
        if context.has_secret_key():
            raise KeyFileError(f"public key file {path} holds a secret key")
        self._public[domain] = public_bytes(context)
        return self._public[domain]

    @contextmanager
    def _lock(self, domain: str) -> Iterator[None]:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        fd = os.open(self.root / f".{domain}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)
