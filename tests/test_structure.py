"""Package structure: no import circle between lapa_learning modules (lazy imports inside functions included),
one atomic writer, and a top-level CLI help that names only verbs that exist."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """module -> lapa_learning modules it imports anywhere in its source (package __init__s left out)."""
    files = {".".join(p.relative_to(root).with_suffix("").parts): p for p in (root / "lapa_learning").rglob("*.py")}
    modules = {name for name in files if not name.endswith("__init__")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name in modules:
        for node in ast.walk(ast.parse(files[name].read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lapa_learning"):
                targets = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for target in targets:
                if target in modules and target != name:
                    graph[name].add(target)
                    break  # `from pkg.mod import name`: the module, not also its package
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import circle [a, b, ..., a] of the graph, or [] (depth-first search)."""
    done: set[str] = set()

    def visit(node, path):
        if node in path:
            return path[path.index(node):] + [node]
        if node in done:
            return []
        for nxt in sorted(graph[node]):
            found = visit(nxt, path + [node])
            if found:
                return found
        done.add(node)
        return []

    for start in sorted(graph):
        found = visit(start, [])
        if found:
            return found
    return []


def test_the_cycle_finder_finds_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []


def test_no_import_circles():
    assert find_cycle(import_graph()) == []


def test_one_atomic_writer():
    """Only lapa_learning/io.py renames files into place; every other writer goes through it."""
    pattern = re.compile(r"\bos\.(replace|rename)\(|\.rename\(")
    found = [f"{p.relative_to(ROOT)}:{n}" for p in (ROOT / "lapa_learning").rglob("*.py") if p.name != "io.py"
             or p.parent.name != "lapa_learning"
             for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert found == []


def test_top_level_help_names_every_verb_that_exists(capsys):
    """`lapa --help` lists each group's verbs from the command table, so it cannot name a verb that is not there
    (it once said `data: generate, inspect, import` while the verbs were info and import-bag)."""
    from lapa_learning.cli import COMMANDS, main

    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps long help lines
    for group in {g for g, _ in COMMANDS if g is not None}:
        verbs = ", ".join(v for g, v in COMMANDS if g == group)
        assert f"({verbs})" in text, (group, text)
        with pytest.raises(SystemExit):
            main([group, "--help"])
        assert f"({verbs})" in " ".join(capsys.readouterr().out.split())
