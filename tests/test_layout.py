"""The package's shape: layers point one way, no module imports itself in a circle, tr1_env needs no torch."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from tr1_env.util.files import jsonable

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tr1_env", "tr1_agent", "baselines", "benchmarks")


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every package module ``name`` imports, at module level or inside a function (lazy imports count)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".")[: len(name.split(".")) - node.level + (path.name == "__init__.py")]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
                break
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle, as the list of modules around it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_walk_sees_imports_and_finds_circles():
    graph = _graph()
    assert "tr1_env.execution" in graph["tr1_env.evaluation.metrics"]  # a module-level import
    assert "tr1_agent.flag_trader.ppo" in graph["tr1_agent.cli"]  # a lazy one, inside a function
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycle():
    assert _cycle(_graph()) is None


def test_layers_point_one_way():
    """benchmarks -> baselines, tr1_agent -> tr1_env: nothing imports from a layer above it."""
    above = {"tr1_env": ("tr1_agent", "baselines", "benchmarks"), "tr1_agent": ("baselines", "benchmarks"),
             "baselines": ("tr1_agent", "benchmarks")}
    wrong = [(module, target) for module, targets in _graph().items() for target in targets
             if target.startswith(above.get(module.split(".")[0], ()))]
    assert wrong == []


def test_tr1_env_imports_without_torch():
    """Every tr1_env module imports in a fresh interpreter without loading torch, transformers or trl."""
    names = [name for name in _modules() if name.startswith("tr1_env")]
    code = ("import importlib, json, sys\n"
            f"for name in {names!r}:\n    importlib.import_module(name)\n"
            "print(json.dumps(sorted(m for m in ('torch', 'transformers', 'trl', 'peft') if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_jsonable_writes_plain_json():
    value = {"n": np.int64(3), "sharpe": np.float64("nan"), "cr": np.float32(0.5), "inf": float("inf"),
             "rows": (1, [np.bool_(True), None]), "day": np.datetime64("2024-06-03"), 7: "seven"}
    assert jsonable(value) == {"n": 3, "sharpe": None, "cr": 0.5, "inf": None, "rows": [1, [True, None]],
                               "day": "2024-06-03", "7": "seven"}
    assert type(jsonable(value)["n"]) is int
    json.dumps(jsonable(value), allow_nan=False)


# tr1_env's rooms, bottom floor first: a module imports only from its own room or the rooms below it
ENV_LAYERS = ("util", "data", "core", "context", "scoring", "execution", "evaluation", "contamination", "envs", "cli")


def _room(module: str) -> str:
    return module.split(".")[1] if "." in module else "__init__"


def test_tr1_env_rooms_point_down():
    rooms = {_room(name) for name in _modules() if name.startswith("tr1_env.")}
    assert rooms <= set(ENV_LAYERS), f"a room without a floor in ENV_LAYERS: {rooms - set(ENV_LAYERS)}"
    wrong = [(module, target) for module, targets in _graph().items() if module.startswith("tr1_env.")
             for target in targets if target.startswith("tr1_env.")
             and ENV_LAYERS.index(_room(target)) > ENV_LAYERS.index(_room(module))]
    assert wrong == []


def test_no_module_uses_another_modules_private_names():
    """``from x import _name`` or ``x._name`` across modules: a renderer two builders share is public."""
    modules = _modules()
    found = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        found.append((name, f"{node.module}.{alias.name}"))
                    elif f"{node.module}.{alias.name}" in modules:
                        aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in modules:
                        aliases[alias.asname or alias.name] = alias.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                found.append((name, f"{aliases[node.value.id]}.{node.attr}"))
    assert sorted(set(found)) == [], "\n".join(map(str, sorted(set(found))))
