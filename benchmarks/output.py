"""Where a benchmark's results go: stdout, `--out`, and one current file per benchmark.

That file is `docs/benchmarks-<name>.json` (`scripts/bench` records each run into it); a
sub-benchmark (`models.fit_time`) is a variant of its package's file (`fit_time`).

A benchmark's default run is the file's top level; each of its variants (`--quick`,
`--sweep`, `--seed-study`, ...) is kept under `variants.<variant>`, replaced by its next
run. Older runs live in git history only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from atlasrec.files import write_atomic

VARIANTS = "variants"


def emit(results: dict[str, Any], out: Path | None) -> None:
    """Print `results` as JSON and write the same text to `out` (if any)."""
    text = json.dumps(results, indent=2)
    if out:
        out.write_text(text)
    print(text)


def record(path: Path, results: dict[str, Any], variant: str = "") -> None:
    """Put one run into the benchmark's result file: the top level, or `variants.<variant>`."""
    held = json.loads(path.read_text()) if path.exists() else {}
    variants = held.pop(VARIANTS, {})
    if variant:
        variants[variant] = results
        merged = {**held, VARIANTS: variants}
    else:
        merged = {**results, VARIANTS: variants} if variants else results
    write_atomic(path, (json.dumps(merged, indent=2) + "\n").encode())


if __name__ == "__main__":  # python -m benchmarks.output FILE RUN_JSON [VARIANT]
    record(Path(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text()), *sys.argv[3:4])
