"""Where a benchmark's results go: JSON on stdout, and the same text in `--out` when given."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def emit(results: dict[str, Any], out: Path | None) -> None:
    """Print `results` as JSON and write the same text to `out` (if any)."""
    text = json.dumps(results, indent=2)
    if out:
        out.write_text(text)
    print(text)
