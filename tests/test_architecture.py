"""The package's floor plan, read from its imports (an AST walk of ``src/``, imports inside functions included):
no import circle, no import from a lower layer to a higher one, few modules directly in the package.

The layers, lowest first (docs/design.md draws them): the shared ground (errors, fileio, devices, cache, backends,
provenance, version) -> data -> model -> compare -> export -> runners -> run, seed, serve, bench (side by side,
none importing another) -> demo, api -> cli -> the package itself.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Set

from conftest import REPO

PKG = "pix2pixhd_deploy"
ROOT = REPO / "src" / PKG
GROUND = {"errors", "fileio", "devices", "cache", "provenance", "version", "backends", "ray_auth"}
LAYERS = [GROUND, {"data"}, {"model"}, {"compare"}, {"export"}, {"runners"}, {"run", "seed", "serve", "bench"},
          {"demo", "api"}, {"cli"}, {"", "__main__"}]


def modules() -> Dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, known: Set[str]) -> Set[str]:
    """The package's modules that ``name`` imports (as dotted names relative to the package)."""
    parts = name.split(".")
    package = parts[:-1]  # __init__ files: the package is the folder, which parts[:-1] already is
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and (node.module == PKG or node.module.startswith(PKG + ".")):
                target = node.module[len(PKG) + 1:]
            else:
                continue
            for alias in node.names:
                full = f"{target}.{alias.name}" if target else alias.name
                out.add(full if full in known or f"{full}.__init__" in known else target)
        elif isinstance(node, ast.Import):
            out |= {a.name[len(PKG) + 1:] for a in node.names if a.name.startswith(PKG + ".")}
    return {m[:-len(".__init__")] if m.endswith(".__init__") else m for m in out} - {name}


def graph() -> Dict[str, Set[str]]:
    mods = modules()
    norm = {(m[:-len(".__init__")] if m.endswith(".__init__") else ("" if m == "__init__" else m)): p
            for m, p in mods.items()}
    names = set(norm) | {m + ".__init__" for m in norm}
    return {m: {t for t in imports_of(m if not mods.get(m + ".__init__") else m + ".__init__", p, names)
                if t in norm} for m, p in norm.items()}


def layer(module: str) -> int:
    top = module.split(".")[0]
    for rank, members in enumerate(LAYERS):
        if top in members:
            return rank
    raise AssertionError(f"{module} is in no layer: add its package to LAYERS and to docs/design.md")


def test_no_import_circles():
    edges = graph()
    index, low, stack, on, circles, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                on.discard(w)
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                circles.append(sorted(part))

    for v in edges:
        if v not in index:
            visit(v)
    assert not circles, circles


def test_imports_run_one_way():
    upward = []
    for module, targets in graph().items():
        for target in targets:
            same_package = target.split(".")[0] == module.split(".")[0] and module.split(".")[0] != ""
            both_ground = layer(target) == layer(module) == 0
            if not (same_package or both_ground or layer(target) < layer(module)):
                upward.append(f"{module} -> {target}")
    assert not upward, upward


def test_few_modules_directly_in_the_package():
    flat = sorted(p.name for p in ROOT.glob("*.py"))
    assert len(flat) <= 12, flat


def test_the_checker_sees_a_circle_and_an_upward_import(tmp_path, monkeypatch):
    """The walk itself: a fake tree with data -> run (upward) and a circle must be caught."""
    root = tmp_path / PKG
    for rel, text in {"__init__.py": "", "errors.py": "", "data/__init__.py": "",
                      "data/a.py": "from ..run.b import x\n", "run/__init__.py": "",
                      "run/b.py": "from ..data.a import y\n"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    monkeypatch.setattr(__import__(__name__), "ROOT", root)
    edges = graph()
    assert edges["data.a"] == {"run.b"} and edges["run.b"] == {"data.a"}
    import pytest

    with pytest.raises(AssertionError, match="data.a -> run.b"):
        test_imports_run_one_way()
    with pytest.raises(AssertionError, match="data.a"):
        test_no_import_circles()
