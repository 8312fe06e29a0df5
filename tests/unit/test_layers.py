"""The import direction of the code base: a layer imports only layers below it, and plugins import only
``sync_gateway.contracts``. Every import counts, deferred and ``TYPE_CHECKING`` ones included."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# bottom to top; a module may import its own layer and the ones before it
LAYERS: list[set[str]] = [
    {
        "errors",
        "retry",
        "jsontext",
        "fields",
        "resources",
        "logging",
        "config",
        "contracts",
        "__init__",
        "metrics",
        "http_server",
    },
    {"couch", "supervisor", "diff", "profiles", "rules", "plugins", "validation"},
    {"dbsecurity", "eventlog", "receipts", "users", "quarantine", "audit", "accounts"},
    {"conflicts", "review"},
    {"distribute", "project", "ingest"},
    {"api", "health", "edge"},
    {"runtime"},
    {"cli", "devserver"},
]
PLUGIN_PACKAGES = ("conflict_handlers", "erp_connectors")

# known exceptions, each one to be removed by the change that ends it (issue "The house")
KNOWN: set[tuple[str, str]] = set()


def _layer_of(part: str) -> int:
    for index, layer in enumerate(LAYERS):
        if part in layer:
            return index
    raise AssertionError(f"sync_gateway.{part} is in no layer: add it to LAYERS")


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            if node.module == "sync_gateway":  # `from sync_gateway import metrics` names a module
                found.update(f"sync_gateway.{a.name}" for a in node.names if _is_module(a.name))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def _is_module(name: str) -> bool:
    return (ROOT / "sync_gateway" / f"{name}.py").exists() or (ROOT / "sync_gateway" / name).is_dir()


def _part(module: str) -> str | None:
    pieces = module.split(".")
    if pieces[0] != "sync_gateway":
        return None
    return pieces[1] if len(pieces) > 1 else "__init__"


def test_every_layer_imports_only_downward() -> None:
    wrong = []
    for path in sorted((ROOT / "sync_gateway").rglob("*.py")):
        here = path.relative_to(ROOT / "sync_gateway").parts[0].removesuffix(".py")
        for module in _imports(path):
            if module.split(".")[0] in PLUGIN_PACKAGES and (here, module.split(".")[0]) not in KNOWN:
                wrong.append(f"{path.relative_to(ROOT)} imports the plugin {module}")
                continue
            there = _part(module)
            if there is None or there == here or (here, there) in KNOWN:
                continue
            if _layer_of(there) > _layer_of(here):
                wrong.append(f"{path.relative_to(ROOT)} ({here}) imports {module} ({there}, a higher layer)")
    assert wrong == []


def test_plugins_import_only_the_contracts() -> None:
    wrong = []
    for package in PLUGIN_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for module in _imports(path):
                if module.startswith("sync_gateway") and module != "sync_gateway.contracts":
                    wrong.append(f"{path.relative_to(ROOT)} imports {module}")
    assert wrong == []


def test_the_known_exceptions_still_exist() -> None:
    """An exception that was removed must leave the list too, so the list never hides a new violation."""
    seen = set()
    for path in (ROOT / "sync_gateway").rglob("*.py"):
        here = path.relative_to(ROOT / "sync_gateway").parts[0].removesuffix(".py")
        for module in _imports(path):
            there = _part(module) or module.split(".")[0]
            seen.add((here, there))
    assert seen >= KNOWN, KNOWN - seen
