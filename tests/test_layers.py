"""The layering of docs/architecture.md: no layer imports a higher one, and no import cycles.

The layers are the import-linter contract in pyproject.toml (`lint-imports` prints the same
check for people); these tests read that contract and check it with grimp, which
import-linter itself runs on.
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]


def contract_layers(graph: grimp.ImportGraph) -> list[grimp.Layer]:
    """The contract's layers, highest first; an optional `(module)` only when it exists."""
    contract = next(c for c in CONFIG["contracts"] if c["id"] == "layers")
    layers = []
    for text in contract["layers"]:
        names = []
        for name in (part.strip() for part in text.split(":")):
            optional = name.startswith("(")
            name = name.strip("()")
            if not optional or name in graph.modules:
                names.append(name)
        layers.append(grimp.Layer(*names, independent=False))
    return layers


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*CONFIG["root_packages"], cache_dir=None)


def upward(graph: grimp.ImportGraph) -> list[str]:
    """Every import chain from a lower layer up to a higher one."""
    found = graph.find_illegal_dependencies_for_layers(layers=contract_layers(graph))
    return sorted(f"{dep.importer} -> {dep.imported}" for dep in found)


def test_no_layer_imports_a_higher_one(graph: grimp.ImportGraph) -> None:
    assert upward(graph) == []


def test_every_module_is_in_a_layer(graph: grimp.ImportGraph) -> None:
    layered = [m for layer in contract_layers(graph) for m in layer.module_tails]
    roots = set(CONFIG["root_packages"])
    loose = sorted(
        m
        for m in graph.modules
        if m not in roots and not any(m == p or m.startswith(f"{p}.") for p in layered)
    )
    assert loose == []


def test_the_check_catches_an_upward_import(graph: grimp.ImportGraph) -> None:
    broken = copy.deepcopy(graph)
    broken.add_import(importer="atlasrec.boundary", imported="audit.ledger")
    assert "atlasrec.boundary -> audit.ledger" in upward(broken)


def test_no_import_cycles(graph: grimp.ImportGraph) -> None:
    cycles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back is not None:
                cycles.append(" -> ".join((module, *back)))
    assert cycles == []
