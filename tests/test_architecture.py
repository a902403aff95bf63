"""The package's wings import only downward, and no module imports itself round a circle
(in the spirit of import-linter's layers contract). Every import counts: top-level ones,
those inside functions and those under TYPE_CHECKING."""

from __future__ import annotations

import ast
from pathlib import Path

import glidecli

PACKAGE = Path(glidecli.__file__).parent
# Highest first: a wing may import the wings after it, never those before it. The three front
# ends: cli (which starts the servers), mcp (the MCP tools, on serve's job queue; cli hands
# its routes to serve's app) and serve; each translates its input into the requests of `request`.
LAYERS = ("cli", "mcp", "serve", "request", "train", "render", "files", "diffusion", "nets")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """The glidecli modules `path` imports, as dotted names."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            candidates = [target] + [f"{target}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        found.update(c for c in candidates if c.startswith("glidecli.") and module_path(c).exists())
    return found


def module_path(name: str) -> Path:
    relative = Path(*name.split(".")[1:])
    package_init = PACKAGE / relative / "__init__.py"
    return package_init if package_init.exists() else PACKAGE / relative.with_suffix(".py")


def wing(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def import_graph() -> dict[str, set[str]]:
    return {module_name(path): imported_modules(path) for path in PACKAGE.rglob("*.py")}


def test_every_module_lives_in_a_wing():
    loose = [name for name in import_graph() if wing(name) is None and name not in ("glidecli", "glidecli.__main__")]
    assert not loose, f"modules outside the wings: {loose}"


def test_wings_import_only_downward():
    upward = []
    for importer, targets in import_graph().items():
        if wing(importer) is None:
            continue
        for target in targets:
            if wing(target) is not None and LAYERS.index(wing(target)) < LAYERS.index(wing(importer)):
                upward.append(f"{importer} -> {target}")
    assert not upward, "imports against the layers:\n" + "\n".join(sorted(upward))


def test_no_import_cycles():
    graph = {name: {t for t in targets if t != name} for name, targets in import_graph().items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_layering_check_sees_imports():
    """The checks above are only as good as the parser: it must find known edges."""
    graph = import_graph()
    assert "glidecli.nets.config" in graph["glidecli.files.manifest"]
    assert "glidecli.train.settings" in graph["glidecli.train.data"]
    assert "glidecli.render.engine" in graph["glidecli.request.text"]  # imported inside a function
    assert "glidecli.request.commands" in graph["glidecli.cli.generate"]


def test_public_api_is_listed_and_documented():
    assert set(glidecli.__all__) >= {"Session", "Job", "Stage", "SamplerChoice", "render_generate", "render_upsample",
                                     "render_inpaint", "load_manifest", "RenderError", "ManifestError"}
    for name in glidecli.__all__:
        value = getattr(glidecli, name)
        if name != "__version__":
            assert (value.__doc__ or "").strip(), f"glidecli.{name} has no docstring"


def test_the_known_failures_name_real_exception_classes():
    """request/failures.py names exception classes by module and name (so that --help imports
    no torch); a module split or a rename must not leave a name that matches nothing."""
    import importlib

    from glidecli.request.failures import KNOWN_FAILURES

    for module_name, class_name in KNOWN_FAILURES:
        found = getattr(importlib.import_module(module_name), class_name, None)
        assert isinstance(found, type) and issubclass(found, Exception), (module_name, class_name)
        assert found.__module__ == module_name, (module_name, class_name, found.__module__)
