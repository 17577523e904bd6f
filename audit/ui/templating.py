"""The audit UI's templates, and the standalone (printable) compliance report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from audit.ui.chart import budget_chart
from privacy.epsilon_terms import GLOSSARY, WHY_LESS_THAN_SUMS

HERE = Path(__file__).parent
CSS = (HERE / "static" / "audit.css").read_text()

templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
templates.globals.update(
    eps_terms={term.key: term for term in GLOSSARY},
    eps_glossary=GLOSSARY,
    eps_why_less_than_sums=WHY_LESS_THAN_SUMS,
)


def report_chart(report: dict[str, Any]) -> Markup:
    """The budget chart of a compliance report: its runs and cap history over time."""
    budget = report["budget"]
    return budget_chart(
        report["runs"], budget["epsilon_cap"], budget["epsilon_spent"], report["cap_history"]
    )


def report_html(report: dict[str, Any], *, standalone: bool = True) -> str:
    """The printable report; `standalone` inlines the stylesheet (a file, not a page)."""
    return templates.get_template("report.html").render(
        r=report,
        chart=report_chart(report),
        inline_css=Markup(CSS) if standalone else None,  # noqa: S704 - our own file
        who=None,
    )
