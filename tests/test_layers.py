"""The layering rules of DESIGN.md §5, checked on the source: imports point down only."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import squall

SRC = Path(squall.__file__).parent

# Which top-level squall modules/packages each layer may import (besides itself).
ALLOWED: dict[str, set[str]] = {
    "types": set(),
    "errors": set(),
    "config": {"errors", "types"},
    "tokens": {"errors", "types"},
    "protocol": {"errors", "types", "config"},
    "core": {"protocol", "errors", "types", "config", "tokens"},
    "brokers": {"core", "protocol", "errors", "types", "config"},
    "server": {"core", "protocol", "errors", "types", "config", "tokens"},
    "app": {"server", "brokers", "core", "protocol", "errors", "types", "config", "tokens"},
    "cli": {"app", "config", "tokens", "errors", "types", "server"},
    "__init__": {"app", "core", "errors", "tokens", "types"},
}
FORBIDDEN_IN_PROTOCOL = {"asyncio", "socket", "redis", "nats", "selectors", "uvloop"}


def layer_of(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            if node.module == "squall":
                names.extend(f"squall.{alias.name}" for alias in node.names)
    return names


SOURCES = sorted(SRC.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_point_down(path: Path) -> None:
    layer = layer_of(path)
    assert layer in ALLOWED, f"{path}: no layering rule for {layer!r}; add one to this test"
    for name in imports(path):
        parts = name.split(".")
        if parts[0] == "squall" and len(parts) > 1:
            target = parts[1]
            if target == layer:
                continue
            assert target in ALLOWED[layer], f"{path}: {layer} must not import squall.{target}"
        if layer == "protocol":
            assert parts[0] not in FORBIDDEN_IN_PROTOCOL, f"{path}: protocol/ is sans-I/O"


def test_rule_catches_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import asyncio\nfrom squall.server import http\n")
    assert imports(bad) == ["asyncio", "squall.server"]


def public_modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(squall.__path__, "squall."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return names


@pytest.mark.parametrize("name", ["squall", *public_modules()])
def test_public_modules_declare_all(name: str) -> None:
    module = importlib.import_module(name)
    if not hasattr(module, "__all__"):
        if Path(module.__file__ or "").name == "__init__.py" and name != "squall":
            return  # plain package markers
        pytest.fail(f"{name} has no __all__")
    for attr in module.__all__:
        assert hasattr(module, attr), f"{name}.__all__ names {attr!r}, which does not exist"
