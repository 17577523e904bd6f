"""The key service: one key per domain, kept private, created once even under races."""

from __future__ import annotations

import hashlib
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from atlasrec.errors import InvalidInputError
from privacy.he import KeyMismatchError, KeyUnavailableError, decrypt, encrypt, key_id
from privacy.he import load_context as load
from privacy.keys import KeyFileError, KeyService


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_key_is_created_once_and_persists(tmp_path: Path) -> None:
    root = tmp_path / "keys"
    first = KeyService(root).ensure("region-eu")
    assert KeyService(root).ensure("region-eu") == first
    assert KeyService(root).key_id("region-eu") == first
    assert KeyService(root).ensure("global") != first
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == [
        "global.ckks",
        "region-eu.ckks",
    ]


def test_key_files_are_private(tmp_path: Path) -> None:
    service = KeyService(tmp_path / "keys")
    service.ensure("region-eu")
    assert mode(service.root) == 0o700
    assert mode(service.path("region-eu")) == 0o600


def test_aggregators_get_a_context_that_cannot_decrypt(tmp_path: Path) -> None:
    service = KeyService(tmp_path)
    kid = service.ensure("region-eu")
    public = load(service.public_context("region-eu"))
    assert not public.has_secret_key() and key_id(public) == kid
    enc = encrypt(public, [0.5, -0.25])
    with pytest.raises(KeyUnavailableError):
        decrypt(public, enc)
    np.testing.assert_allclose(
        decrypt(service.secret_context("region-eu"), enc), [0.5, -0.25], atol=1e-6
    )
    # a key holder in another process (a fresh service on the same folder) decrypts too
    np.testing.assert_allclose(
        decrypt(KeyService(tmp_path).secret_context("region-eu"), enc), [0.5, -0.25], atol=1e-6
    )


def test_domains_do_not_share_keys(tmp_path: Path) -> None:
    service = KeyService(tmp_path)
    service.ensure("region-eu")
    service.ensure("region-us")
    enc = encrypt(load(service.public_context("region-eu")), [1.0])
    with pytest.raises(KeyMismatchError):
        decrypt(service.secret_context("region-us"), enc)


@pytest.mark.parametrize("domain", ["", "../eu", "a/b", "EU", ".hidden", "-x", "a b", "x" * 65])
def test_unsafe_domain_names_are_refused(tmp_path: Path, domain: str) -> None:
    with pytest.raises(InvalidInputError, match="invalid key domain"):
        KeyService(tmp_path).ensure(domain)
    assert not any(tmp_path.iterdir())


def test_an_unknown_domain_has_no_key(tmp_path: Path) -> None:
    with pytest.raises(KeyUnavailableError, match="no key for domain 'region-eu'"):
        KeyService(tmp_path).public_context("region-eu")


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[:-1000],
        lambda data: data[:100] + bytes([data[100] ^ 0x10]) + data[101:],
        lambda data: b"not a key file",
    ],
    ids=["truncated", "flipped-bit", "foreign"],
)
def test_a_damaged_key_file_is_named(tmp_path: Path, damage: object) -> None:
    KeyService(tmp_path).ensure("region-eu")
    path = tmp_path / "region-eu.ckks"
    path.write_bytes(damage(path.read_bytes()))  # type: ignore[operator]
    with pytest.raises(KeyFileError, match=str(path)):
        KeyService(tmp_path).secret_context("region-eu")
    with pytest.raises(KeyFileError):  # never silently replaced by a new key
        KeyService(tmp_path).ensure("region-eu")


def test_a_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    KeyService(tmp_path).ensure("region-eu")
    (tmp_path / "region-eu.ckks").chmod(0o644)
    with pytest.raises(KeyFileError, match="mode 0644"):
        KeyService(tmp_path).key_id("region-eu")


RACER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from privacy.keys import KeyService
    service = KeyService(Path(sys.argv[1]))
    print("ready", flush=True)
    sys.stdin.readline()
    print(service.ensure("region-eu"), flush=True)
    """
)


def test_processes_racing_to_create_a_key_end_with_one(tmp_path: Path) -> None:
    root = tmp_path / "keys"
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(root)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for racer in racers:  # all imported and waiting
        assert racer.stdout is not None and racer.stdout.readline().strip() == "ready"
    for racer in racers:
        assert racer.stdin is not None
        racer.stdin.write("go\n")
        racer.stdin.flush()
    ids = {racer.communicate(timeout=60)[0].strip() for racer in racers}
    assert all(racer.returncode == 0 for racer in racers)
    assert ids == {KeyService(root).key_id("region-eu")}
    assert [p.name for p in root.iterdir() if not p.name.startswith(".region-eu.lock")] == [
        "region-eu.ckks"
    ]


def test_an_aggregator_gets_public_key_files_only(tmp_path: Path) -> None:
    holder = KeyService(tmp_path / "holder")
    kid = holder.ensure("region-eu")
    path = holder.export_public("region-eu", tmp_path / "aggregator")
    assert path == tmp_path / "aggregator" / "region-eu.public"
    assert [p.name for p in path.parent.iterdir()] == ["region-eu.public"]
    aggregator = KeyService(tmp_path / "aggregator")
    public = load(aggregator.public_context("region-eu"))
    assert not public.has_secret_key() and key_id(public) == kid
    enc = encrypt(public, [0.5, -0.25])
    with pytest.raises(KeyUnavailableError):
        aggregator.secret_context("region-eu")
    with pytest.raises(KeyUnavailableError):
        decrypt(public, enc)
    np.testing.assert_allclose(
        decrypt(holder.secret_context("region-eu"), enc), [0.5, -0.25], atol=1e-6
    )
    with pytest.raises(KeyUnavailableError):  # no other domain came with it
        aggregator.public_context("global")


def test_a_public_key_file_must_be_intact_and_hold_no_secret(tmp_path: Path) -> None:
    holder = KeyService(tmp_path / "holder")
    holder.ensure("region-eu")
    path = holder.export_public("region-eu", tmp_path / "aggregator")
    good = path.read_bytes()
    path.write_bytes(good[:-100])
    with pytest.raises(KeyFileError, match="corrupted"):
        KeyService(path.parent).public_context("region-eu")
    # the secret context, framed as a public key file, is refused
    payload = (holder.root / "region-eu.ckks").read_bytes()[len(b"ATLASREC-CKKS-KEY\x01") + 32 :]
    path.write_bytes(b"ATLASREC-CKKS-PUB\x01" + hashlib.sha256(payload).digest() + payload)
    with pytest.raises(KeyFileError, match="holds a secret key"):
        KeyService(path.parent).public_context("region-eu")
