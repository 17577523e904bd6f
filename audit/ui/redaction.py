"""Other tenants' ids out of what a tenant officer is shown (`audit.reports.OTHER_TENANT`).

Ids are replaced wherever they stand: as a whole value, inside text (as a whole token), or
as a key; a dict's entries keyed by other tenants (a round's epsilons, say) are collapsed
into one entry whose value is withheld, so neither their ids nor their values show.
"""

from __future__ import annotations

import re
from typing import Any

from audit.reports import OTHER_TENANT

WITHHELD = "withheld"


def redact(value: Any, others: set[str]) -> Any:
    """`value` (JSON-like) with the tenant ids of `others` redacted."""
    if not others:
        return value
    pattern = _pattern(others)
    return _redact(value, others, pattern)


def redact_text(text: str, others: set[str]) -> str:
    """`text` with every whole-token occurrence of an id of `others` redacted."""
    return _pattern(others).sub(OTHER_TENANT, text) if others else text


def _pattern(others: set[str]) -> re.Pattern[str]:
    ids = "|".join(re.escape(t) for t in sorted(others, key=len, reverse=True))
    return re.compile(rf"(?<![A-Za-z0-9_-])(?:{ids})(?![A-Za-z0-9_-])")


def _redact(value: Any, others: set[str], pattern: re.Pattern[str]) -> Any:
    if isinstance(value, str):
        return pattern.sub(OTHER_TENANT, value)
    if isinstance(value, list):
        return [_redact(v, others, pattern) for v in value]
    if isinstance(value, dict):
        kept = {
            pattern.sub(OTHER_TENANT, str(k)): _redact(v, others, pattern)
            for k, v in value.items()
            if k not in others
        }
        withheld = sum(1 for k in value if k in others)
        if withheld:
            kept[OTHER_TENANT] = WITHHELD if withheld == 1 else f"{WITHHELD} ({withheld} tenants)"
        return kept
    return value
