"""Tests of the fdl.data package surface and its place in the import graph."""
import ast
import importlib
from pathlib import Path

import pytest

import fdl.data

FORBIDDEN = ("fdl.nn", "fdl.train", "fdl.config", "fdl.cli", "fdl.population", "fdl.records")


def test_every_exported_name_exists():
    missing = [name for name in fdl.data.__all__ if not hasattr(fdl.data, name)]
    assert missing == []


@pytest.mark.parametrize("name", ["augment", "order", "preprocess", "sources", "split", "stream"])
def test_every_module_lists_existing_public_names(name):
    module = importlib.import_module(f"fdl.data.{name}")
    names = module.__all__
    assert names and len(set(names)) == len(names)
    assert [n for n in names if n.startswith("_") or not hasattr(module, n)] == []


def test_data_never_imports_models_engine_config_or_cli():
    offending = []
    for path in Path(fdl.data.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            offending += [f"{path.name}: {name}" for name in names
                          if name.startswith(FORBIDDEN) or name == "fdl"]
    assert offending == []
