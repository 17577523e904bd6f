"""Settings: embedded defaults, environment overrides, unsafe defaults refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from atlasrec.errors import ConfigError, InvalidInputError
from atlasrec.settings import DEV_SECRET, Settings, get_settings
from atlasrec.tenancy import Region, parse_region, validate_tenant_id


def test_embedded_defaults(tmp_path: Path) -> None:
    s = Settings(home=tmp_path)
    assert s.control_url() == f"sqlite:///{tmp_path / 'control.db'}"
    assert s.region_url(Region.EU) == f"sqlite:///{tmp_path / 'regions' / 'eu' / 'data.db'}"
    assert s.region is None and s.redis_url is None and s.broker_url is None


def test_environment_overrides(cli_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATLASREC_REGION_DB_URLS__EU", "postgresql+psycopg://u@h/eu")
    monkeypatch.setenv("ATLASREC_REGION", "eu")
    s = get_settings()
    assert s.home == cli_home
    assert s.region_url(Region.EU) == "postgresql+psycopg://u@h/eu"
    assert s.region_url(Region.US).startswith("sqlite:///")
    assert s.region == Region.EU


@pytest.mark.parametrize("environment", ["staging", "production"])
def test_default_secret_is_refused_outside_development(
    cli_home: Path, monkeypatch: pytest.MonkeyPatch, environment: str
) -> None:
    monkeypatch.setenv("ATLASREC_ENVIRONMENT", environment)
    with pytest.raises(ConfigError, match="ATLASREC_SECRET_KEY must be set"):
        get_settings()
    get_settings.cache_clear()
    monkeypatch.setenv("ATLASREC_SECRET_KEY", "too-short")
    with pytest.raises(ConfigError, match="at least 32"):
        get_settings()
    get_settings.cache_clear()
    monkeypatch.setenv("ATLASREC_SECRET_KEY", "x" * 40)
    assert get_settings().secret_key.get_secret_value() != DEV_SECRET


def test_invalid_setting_is_a_config_error(cli_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATLASREC_REGION", "mars")
    with pytest.raises(ConfigError, match="invalid settings"):
        get_settings()


@pytest.mark.parametrize("value", ["ok", "tenant-1", "a_b", "0abc"])
def test_valid_tenant_ids(value: str) -> None:
    assert validate_tenant_id(value) == value


@pytest.mark.parametrize("value", ["", "A", "a", "-x", "a b", "a/b", "a:b", "é1", "x" * 64])
def test_invalid_tenant_ids(value: str) -> None:
    with pytest.raises(InvalidInputError):
        validate_tenant_id(value)


def test_parse_region() -> None:
    assert parse_region("sg") is Region.SG
    with pytest.raises(InvalidInputError, match="expected one of: us, eu, in, sg"):
        parse_region("mars")
