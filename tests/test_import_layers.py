"""The package's import graph flows one way: no cycle, and no module imports from a layer above
its own. The graph is read from the source with ``ast`` (every import statement, also those
inside functions), so a lazy import cannot hide a back-edge.

The layer order is written once, here (lowest first). A module belongs to the layer of the
longest prefix that names it; a module may import from its own layer and from lower ones.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "aqua_model"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

#: Layers, lowest first. ``aqua_model`` (the package facade, aqua_model/__init__.py) re-exports
#: the public API from costs and the simulator, so every layer above the simulator may use it.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "utilities",
        ("aqua_model._checks", "aqua_model._datafiles", "aqua_model.table_render", "aqua_model.tables"),
    ),
    ("costs", ("aqua_model.costs", "aqua_model.symbols")),
    ("kernels", ("aqua_model.kernels",)),
    ("data", ("aqua_model.hardware", "aqua_model.models")),
    ("plans", ("aqua_model.plans",)),
    ("simulator", ("aqua_model.simulator",)),
    ("api", ("aqua_model",)),
    ("fidelity", ("aqua_model.fidelity",)),  # the selection methods the integrations reuse
    ("integrations", ("aqua_model.integrations",)),
    ("validate", ("aqua_model.validate",)),
    ("plots", ("aqua_model.plots",)),
    ("commands", ("aqua_model.commands",)),
    ("cli", ("aqua_model.cli",)),
)
RANK = {name: i for i, (name, _) in enumerate(LAYERS)}
#: Deprecated aliases of moved modules, kept for one release (see CHANGELOG.md).
SHIMS = ("aqua_model.symbols", "aqua_model.tables")
#: Modules that must never import torch or triton at module level (the analytical package).
ANALYTICAL_LAYERS = ("utilities", "costs", "data", "plans", "simulator", "api")


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str:
    best, best_len = None, -1
    for name, prefixes in LAYERS:
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = name, len(prefix)
    if best is None:
        raise AssertionError(f"module {module} is in no layer; add it to LAYERS in {__file__}")
    return best


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def imports_of(module: str, path: Path, known: set[str]) -> list[tuple[str, int, bool]]:
    """(imported package module, line, at module level) for every import of the package."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    top_level = {id(node) for node in tree.body}
    for node in tree.body:  # imports under a module-level `if`/`try` run at import time too
        if isinstance(node, (ast.If, ast.Try)):
            top_level.update(id(sub) for sub in ast.walk(node))
    out = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = (
                _resolve(module, is_package, node.level, node.module) if node.level else (node.module or "")
            )
            # `from pkg import sub` imports the submodule pkg.sub when there is one
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        for target in targets:
            if target == PACKAGE or target.startswith(PACKAGE + "."):
                while target not in known and "." in target:
                    target = target.rsplit(".", 1)[0]
                out.append((target, node.lineno, id(node) in top_level))
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {m: {t for t, _, _ in imports_of(m, p, known) if t != m} for m, p in mods.items()}


def test_every_module_is_in_a_layer() -> None:
    for module in modules():
        layer_of(module)


def test_no_module_imports_from_a_higher_layer() -> None:
    mods = modules()
    known = set(mods)
    bad = []
    for module, path in mods.items():
        mine = RANK[layer_of(module)]
        for target, line, _ in imports_of(module, path, known):
            if RANK[layer_of(target)] > mine:
                bad.append(
                    f"{path.relative_to(ROOT.parent)}:{line}: {module} ({layer_of(module)}) imports "
                    f"{target} ({layer_of(target)})"
                )
    assert not bad, "imports from a higher layer:\n" + "\n".join(bad)


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the directed graph as a list of nodes, or None (iterative DFS)."""
    state: dict[str, int] = {}
    for start in sorted(edges):
        if state.get(start):
            continue
        stack = [(start, iter(sorted(edges[start])))]
        path = [start]
        state[start] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
                path.pop()
                continue
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if not state.get(nxt):
                state[nxt] = 1
                stack.append((nxt, iter(sorted(edges.get(nxt, ())))))
                path.append(nxt)
    return None


def test_no_import_cycle() -> None:
    edges = graph()
    # a package's __init__ importing its own submodules is how packages re-export; a submodule
    # importing its package's __init__ back is the cycle we forbid
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_finds_a_planted_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_layer_check_sees_a_planted_back_edge(tmp_path: Path) -> None:
    src = tmp_path / "mod.py"
    src.write_text("def f():\n    from aqua_model.simulator import simulate\n")
    found = imports_of("aqua_model.costs.mod", src, set(modules()))
    assert found == [("aqua_model.simulator", 2, False)]
    assert RANK[layer_of(found[0][0])] > RANK[layer_of("aqua_model.costs.mod")]


@pytest.mark.parametrize("module", sorted(m for m in modules() if layer_of(m) in ANALYTICAL_LAYERS))
def test_analytical_modules_do_not_import_torch_at_module_level(module: str) -> None:
    path = modules()[module]
    tree = ast.parse(path.read_text())
    for node in tree.body:
        names = (
            [a.name for a in node.names]
            if isinstance(node, ast.Import)
            else ([node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        )
        assert not any(n.split(".")[0] in ("torch", "triton") for n in names), (
            f"{module} imports {names} at module level"
        )


def test_module_basenames_are_unique_in_the_pipeline_layers() -> None:
    """No two modules of the same name among the layers that make up the model and its figures."""
    seen: dict[str, str] = {}
    clash = []
    for module, path in modules().items():
        if (
            layer_of(module) not in (*ANALYTICAL_LAYERS, "plots")
            or module in SHIMS
            or path.name == "__init__.py"
        ):
            continue
        base = module.rsplit(".", 1)[1]
        if base in seen:
            clash.append(f"{seen[base]} and {module}")
        seen[base] = module
    assert not clash, "modules of the same name: " + "; ".join(clash)
