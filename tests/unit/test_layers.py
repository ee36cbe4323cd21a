"""The package's folders are its layers: each imports only the layers below it.

domain (values and pricing) imports no other layer and no AWS or HTTP library; aws (adapters)
and transport (Bedrock on the wire) import domain; metering (the use case) and settings sit
above them; proxy and authorizer (the entry points) on top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "functions" / "bedrock_spend"
# Which first-level parts of bedrock_spend each layer may import.
ALLOWED = {
    "domain": {"domain"},
    "aws": {"domain", "aws"},
    "transport": {"domain", "transport"},
    "metering": {"domain", "aws", "transport", "settings"},
    "settings": {"domain"},
}
IO_LIBRARIES = {"boto3", "botocore", "httpx", "starlette", "uvicorn", "anyio"}


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def layer_of(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def imported(path: Path) -> set[str]:
    """Every absolute module name the file imports, at top level or inside functions."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            if node.module == "bedrock_spend":
                names.update(f"bedrock_spend.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_module_imports_only_the_layers_below_it(path: Path) -> None:
    layer = layer_of(path)
    allowed = ALLOWED.get(layer)
    if allowed is None:  # the entry points and the package itself
        return
    ours = {name.split(".")[1] for name in imported(path) if name.startswith("bedrock_spend.")}
    assert ours <= allowed, f"{path.name} ({layer}) imports {sorted(ours - allowed)}"


@pytest.mark.parametrize("path", sorted((PACKAGE / "domain").glob("*.py")), ids=lambda p: p.name)
def test_the_domain_does_no_io(path: Path) -> None:
    libraries = {name.split(".")[0] for name in imported(path)}
    assert not libraries & IO_LIBRARIES, f"{path.name} imports {sorted(libraries & IO_LIBRARIES)}"


def test_every_module_is_in_a_known_layer() -> None:
    known = {*ALLOWED, "proxy", "authorizer", "__init__"}
    assert {layer_of(path) for path in modules()} <= known
