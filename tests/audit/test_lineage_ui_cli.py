"""The lineage page shows every fact the command line's lineage shows, and vice versa.

Both render one chain dict (`audit.lineage.request_lineage`): the CLI as text lines
(`lineage_lines`), the UI as `lineage.html`. Their value tokens (ids, versions, hashes,
numbers, times) are compared; numbers as numbers, since each side rounds for reading.
"""

from __future__ import annotations

import copy
import html
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from atlasrec.tenancy import Region
from audit.lineage import find_request, lineage_lines, request_lineage
from audit.ui.templating import templates
from tests.audit.conftest import ClientFactory
from tests.utils.audit import AuditWorld, sign_in

sqlite_only = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
TIME = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?(?:[+-]\d\d:\d\d|Z)?")
TOKEN = re.compile(r"[A-Za-z0-9_.+-]+")
UI_ONLY = {"files", "hyperparameters", "interactions", "charged"}
"""What the page shows beyond the CLI: the model's files and hyperparameters, its interaction
count, when its run was charged (left out of the reverse check)."""


def value_tokens(text: str) -> tuple[set[str], list[float]]:
    """The times (to the second), other tokens with a digit, and the numbers of `text`."""
    times = {t[:19].replace(" ", "T") for t in TIME.findall(text)}
    words, numbers = set(times), []
    for token in TOKEN.findall(TIME.sub(" ", text)):
        token = token.strip(".")
        if not any(c.isdigit() for c in token):
            continue
        try:
            numbers.append(float(token))
        except ValueError:
            words.add(token)
    return words, numbers


def missing(source: str, target: str) -> list[str]:
    """The value tokens of `source` that `target` does not show."""
    words, numbers = value_tokens(source)
    have_words, have_numbers = value_tokens(target)
    gone = sorted(words - have_words)
    for n in numbers:  # each number of `source` needs a number of its own in `target`
        match = next((m for m in have_numbers if abs(n - m) <= 5e-4 + 1e-3 * abs(n)), None)
        if match is None:
            gone.append(repr(n))
        else:
            have_numbers.remove(match)
    return gone


def ui_text(page: str) -> str:
    """The `#lineage` text of a page, without the UI-only facts."""
    section = page[page.index('id="lineage"') : page.rindex("</ol>")]
    section = re.sub(r"<details>.*?</details>", " ", section, flags=re.S)
    section = re.sub(r"charged [0-9T:-]+|[\d,]+ interactions", " ", section)
    return html.unescape(re.sub(r"<[^>]+>", " ", section))


def enriched(chain: dict[str, Any]) -> dict[str, Any]:
    """The chain with every part the seeded world lacks: a count release, event batches,
    regional shares, notes."""
    full = copy.deepcopy(chain)
    training, backbone = full["training"], full["backbone"]
    training["popularity_release"] = {
        **training["run"],
        "run_id": "pop0release0run0000000000000001",
        "kind": "popularity",
        "noise_multiplier": 2.75,
        "epsilon_standalone": 0.219,
        "epsilon_increment": 0.0441,
        "epsilon_total_after": 3.871,
    }
    training["note"] = "training note 4711"
    full["data_snapshot"].update(event_batches=3, event_rows=171)
    backbone["declared"]["shares"] = {"eu": "share-eu-v5", "us": "share-us-v6"}
    backbone["note"] = "backbone note 815"
    return full


def leaves(value: Any) -> set[str]:
    """The chain's string values (tenant ids, statuses, intents, notes...)."""
    if isinstance(value, dict):
        return {s for v in value.values() for s in leaves(v)}
    if isinstance(value, list):
        return {s for v in value for s in leaves(v)}
    return {value} if isinstance(value, str) and value else set()


def shows(text: str, value: str) -> bool:
    return re.search(rf"(?<![\w.-]){re.escape(value)}(?![\w-])", text) is not None


def assert_same_facts(chain: dict[str, Any], page: str) -> None:
    cli = "\n".join(lineage_lines(chain))
    ui = ui_text(page)
    assert missing(cli, ui) == [], "the UI lacks what the CLI shows"
    assert missing(ui, cli) == [], "the CLI lacks what the UI shows"
    # the chain's words too (ids, statuses, intent); the other way round, words such as
    # "federation" are the page's labels as well as values, so only numbered tokens count
    for value in leaves(chain) - set(filter(TIME.fullmatch, leaves(chain))):  # times: above
        assert shows(ui, value) or not shows(cli, value), f"the UI lacks {value!r}"


@sqlite_only
def test_the_lineage_page_shows_what_the_cli_shows(
    world: AuditWorld, app_client: ClientFactory
) -> None:
    request_id = world.requests["shop"]
    scope, row = find_request(world.platform, request_id, regions=[Region.EU], actor="t")
    chain = request_lineage(world.platform, scope, row, actor="t")
    assert chain["backbone"]["rounds"] and chain["backbone"]["tenant_rounds"]
    client: TestClient = app_client(Region.EU)
    assert sign_in(client, "po-eu", world.passwords["po-eu"]).status_code == 303
    assert_same_facts(chain, client.get(f"/audit/lineage?request_id={request_id}").text)

    full = enriched(chain)
    page = templates.get_template("lineage.html").render(
        chain=full, region="eu", who=None, request_id=request_id
    )
    assert_same_facts(full, page)
