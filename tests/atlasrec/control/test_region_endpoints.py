"""Region endpoints: the control plane's `regions.endpoint`, and `atlasrec regions ...`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from atlasrec.control.endpoints import parse_endpoint
from atlasrec.errors import InvalidInputError
from atlasrec.platform import Platform
from atlasrec.tenancy import Region
from tests.atlasrec.test_cli import cli

BAD_URLS = [
    ("ftp://eu.example.com", "http:// or https://"),
    ("eu.example.com", "http:// or https://"),
    ("http://", "names no host"),
    ("https://eu.example.com/audit", "no path"),
    ("https://eu.example.com?x=1", "no path"),
    ("https://eu.example.com#top", "no path"),
    ("https://user:pw@eu.example.com", "credentials"),
    ("http://eu.example.com:99999", "is not a URL"),
    ("http://eu.example.com:0", "port 0"),
    ("http://eu example.com", "whitespace"),
    ("http://" + "a" * 300, "longer than 255"),
]


def test_a_good_url_is_kept_as_its_base() -> None:
    assert parse_endpoint("https://EU.example.com:8443/") == "https://EU.example.com:8443"
    assert parse_endpoint(" http://127.0.0.1:8000 ") == "http://127.0.0.1:8000"


@pytest.mark.parametrize(("url", "message"), BAD_URLS)
def test_a_bad_url_is_refused_in_one_line_naming_the_field(url: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message) as refused:
        parse_endpoint(url)
    assert str(refused.value).startswith("field 'url'") and "\n" not in str(refused.value)


def test_the_control_plane_keeps_each_region_endpoint(platform: Platform) -> None:
    control = platform.control
    assert control.region_endpoints() == dict.fromkeys(sorted(Region, key=str), None)
    assert control.set_region_endpoint(Region.EU, "http://127.0.0.1:8001/") == (
        "http://127.0.0.1:8001"
    )
    assert control.region_endpoint(Region.EU) == "http://127.0.0.1:8001"
    assert control.region_endpoint(Region.US) is None
    with pytest.raises(InvalidInputError):
        control.set_region_endpoint(Region.US, "http://x/path")
    assert control.region_endpoint(Region.US) is None
    control.set_region_endpoint(Region.EU, None)
    assert control.region_endpoint(Region.EU) is None


def test_the_command_line(cli_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(
        capsys, "regions", "set-endpoint", "--region", "sg", "--url", "https://sg.example.com"
    )
    assert code == 0 and out.strip() == "region sg: https://sg.example.com"
    code, out, _ = cli(capsys, "regions", "list", "--json")
    listed = {row["region"]: row["endpoint"] for row in json.loads(out)}
    assert code == 0 and listed == {
        "eu": None,
        "in": None,
        "sg": "https://sg.example.com",
        "us": None,
    }
    code, out, _ = cli(capsys, "regions", "list")
    assert code == 0 and "sg   https://sg.example.com" in out and "(no endpoint registered)" in out
    for args, message in (
        (["--region", "sg", "--url", "https://sg.example.com/x"], "field 'url'"),
        (["--region", "mars", "--url", "https://sg.example.com"], "unknown region 'mars'"),
    ):
        code, _, err = cli(capsys, "regions", "set-endpoint", *args)
        assert code != 0 and message in err and len(err.strip().splitlines()) == 1
    code, out, _ = cli(capsys, "regions", "list", "--json")
    assert {row["region"]: row["endpoint"] for row in json.loads(out)}["sg"] == (
        "https://sg.example.com"
    )
