"""The package's layering (docs/architecture.md): a module imports only from its own subpackage and from
lower layers — also inside functions — so there are no import cycles between subpackages."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "refsr_cli"

# Bottom to top. A subpackage (or top-level module) may import from its own entry and the entries below.
LAYERS = [
    {"", "errors", "console", "workers"},   # "" = refsr_cli/__init__.py (the version)
    {"ops"},
    {"data"},
    {"metrics", "archs", "prepare"},
    {"inference"},
    {"training", "bench"},
    {"commands"},
    {"cli"},
    {"__main__"},
]
LEVEL = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _unit(module: str) -> str:
    """``refsr_cli.data.store`` → ``data``; ``refsr_cli`` → ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.split(".")[0] == "refsr_cli":
            if node.module == "refsr_cli":     # from refsr_cli import console → the module named
                yield from (f"refsr_cli.{a.name}" if a.name in LEVEL else "refsr_cli" for a in node.names)
            else:
                yield node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.split(".")[0] == "refsr_cli")


def test_every_module_belongs_to_a_layer():
    units = {_unit(".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts)) for p in PACKAGE.rglob("*.py")}
    units.discard("__init__")
    assert units <= set(LEVEL), units - set(LEVEL)


def test_no_module_imports_from_a_layer_above_or_beside_it():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        mine = "" if relative.parts == ("__init__.py",) else relative.with_suffix("").parts[0]
        for module in _imports(path):
            theirs = _unit(module)
            if theirs != mine and LEVEL[theirs] >= LEVEL[mine]:
                wrong.append(f"{relative} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_no_relative_imports():
    # Absolute imports keep a module's dependencies greppable (and the check above complete).
    relative = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                if any(isinstance(n, ast.ImportFrom) and n.level for n in ast.walk(ast.parse(p.read_text())))]
    assert not relative, relative
