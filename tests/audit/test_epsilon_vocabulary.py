"""One epsilon vocabulary: every view of a run shows the same standalone ε, increment and
composed total after (`privacy.epsilon_terms`), under the same names."""

from __future__ import annotations

import csv
import html
import io
import re
from collections import defaultdict
from html.parser import HTMLParser
from pathlib import Path

import pytest

from atlasrec.dataplane.dp_runs import DpRunTable
from atlasrec.pipelines.privacy_report import privacy_report
from atlasrec.platform import Platform
from atlasrec.settings import get_settings
from atlasrec.tenancy import Region, Scope
from audit.lineage import find_request, lineage_lines, request_lineage
from privacy.epsilon_terms import RUN_TERMS, run_epsilons
from tests.atlasrec.test_cli import cli
from tests.audit.conftest import ClientFactory
from tests.utils.audit import AuditWorld, seed_audit_world, sign_in

Views = dict[str, dict[str, dict[str, float]]]  # view -> run id -> term -> value
KEYS = [term.key for term in RUN_TERMS]
TEXT_TERMS = re.compile(
    r"standalone ε[ =]([\d.]+)\s+increment[ =]([\d.]+)\s+composed total after[ =]([\d.]+)"
)


class TermCells(HTMLParser):
    """The `data-term` values of a page, by the `data-run-id` of their enclosing element."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str | None] = []
        self.term: str | None = None
        self.found: dict[str, dict[str, float]] = defaultdict(dict)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.stack.append(values.get("data-run-id") or None)
        self.term = values.get("data-term")

    def handle_endtag(self, tag: str) -> None:
        if self.stack:
            self.stack.pop()
        self.term = None

    def handle_data(self, data: str) -> None:
        run = next((r for r in reversed(self.stack) if r), None)
        if self.term and run and data.strip():
            self.found[run][self.term] = float(data)


def cells(page: str) -> dict[str, dict[str, float]]:
    parser = TermCells()
    parser.feed(page)
    return dict(parser.found)


def expected(world: AuditWorld) -> dict[str, dict[str, float]]:
    plane = world.platform.plane(Region.EU)
    with plane.session(Scope("shop", Region.EU), actor="t", action="t") as session:
        runs = DpRunTable(session, plane.ledger).runs()
    return {run.id: t.as_dict() for run, t in zip(runs, run_epsilons(runs), strict=True)}


def ui_views(world: AuditWorld, client_of: ClientFactory) -> Views:
    client = client_of(Region.EU)
    assert sign_in(client, "po-eu", world.passwords["po-eu"]).status_code == 303
    report = client.get("/audit/tenants/shop/report.json").json()
    rows = list(csv.DictReader(io.StringIO(client.get("/audit/tenants/shop/report.csv").text)))
    lineage = client.get(f"/audit/lineage?request_id={world.requests['shop']}").text
    page = client.get("/audit/tenants/shop").text
    rounds = page[page.index('<section class="federation">') :]
    return {
        "json runs": {r["run_id"]: {k: r[k] for k in KEYS} for r in report["runs"]},
        "json rounds": {
            r["run_id"]: {k: r[k] for k in KEYS} for r in report["federation"]["region_rounds"]
        },
        "csv runs": {
            r["id"]: {k: float(r[k]) for k in KEYS} for r in rows if r["record_type"] == "dp_run"
        },
        "html runs": cells(page[: page.index('<section class="federation">')]),
        "html rounds": cells(rounds),
        "html printable report": cells(client.get("/audit/tenants/shop/report").text),
        "html lineage": cells(lineage),
    }


def lineage_view(world: AuditWorld) -> dict[str, dict[str, float]]:
    scope, row = find_request(
        world.platform, world.requests["shop"], regions=[Region.EU], actor="t"
    )
    chain = request_lineage(world.platform, scope, row, actor="t")
    runs = [chain["training"]["run"], *chain["backbone"]["tenant_rounds"]]
    return {run["run_id"]: {k: run[k] for k in KEYS} for run in runs}


def agree(views: Views, truth: dict[str, dict[str, float]], *, places: int = 12) -> None:
    for view, runs in views.items():
        assert runs, f"{view}: no run found"
        for run_id, terms in runs.items():
            assert run_id in truth, f"{view}: unknown run {run_id}"
            for key in KEYS:
                assert round(terms[key], places) == round(truth[run_id][key], places), (
                    f"{view} disagrees on {key} of run {run_id}: {terms[key]} vs "
                    f"{truth[run_id][key]}"
                )


def test_every_view_shows_the_same_three_epsilons(
    world: AuditWorld, app_client: ClientFactory
) -> None:
    truth = expected(world)
    assert len(truth) == 4
    increments = [t["epsilon_increment"] for t in truth.values()]
    standalones = [t["epsilon_standalone"] for t in truth.values()]
    assert increments[0] == pytest.approx(standalones[0])  # the first run: all it adds
    assert all(i < s for i, s in zip(increments[1:], standalones[1:], strict=True))
    views = ui_views(world, app_client)
    exact = {k: v for k, v in views.items() if not k.startswith("html")}
    agree(exact, truth)
    agree({k: v for k, v in views.items() if k.startswith("html")}, truth, places=3)
    assert set(views["html runs"]) == set(truth) == set(views["csv runs"])
    assert len(views["html rounds"]) == len(views["json rounds"]) == 2
    report = privacy_report(world.platform, "shop", actor="t")
    agree({"privacy report": {r["run_id"]: r for r in report["runs"]}}, truth)
    assert all(r["epsilon"] == r["epsilon_standalone"] for r in report["runs"])  # contract name
    agree({"lineage": lineage_view(world)}, truth)


def test_the_command_line_says_the_same(
    cli_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    platform = Platform(get_settings())
    world = seed_audit_world(platform, tmp_path)
    truth = expected(world)
    code, out, _ = cli(capsys, "privacy", "report", "--tenant", "shop")
    assert code == 0
    in_order = [tuple(map(float, m)) for m in TEXT_TERMS.findall(out)]
    assert in_order == [tuple(round(t[k], 3) for k in KEYS) for t in truth.values()]
    scope, row = find_request(platform, world.requests["shop"], regions=[Region.EU], actor="t")
    lines = "\n".join(lineage_lines(request_lineage(platform, scope, row, actor="t")))
    printed = {tuple(map(float, m)) for m in TEXT_TERMS.findall(lines)}
    assert printed and printed <= {tuple(round(t[k], 3) for k in KEYS) for t in truth.values()}
    platform.close()


def test_the_page_explains_the_terms(world: AuditWorld, app_client: ClientFactory) -> None:
    client = app_client(Region.EU)
    sign_in(client, "to-shop", world.passwords["to-shop"])
    page = html.unescape(client.get("/audit/tenants/shop").text)
    assert 'id="glossary"' in page and "Composed totals are less than sums" in page
    for term in RUN_TERMS:
        assert term.label in page and term.definition in page
    assert "charged</th>" not in page and "alone</th>" not in page  # the old, ambiguous words
