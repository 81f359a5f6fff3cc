"""The test suite shares its helpers instead of copying them.

Test modules never import one another (shared code lives in helpers.py, shared fixtures in conftest.py), a
conftest fixture is not redefined in a test module, and one independent LiteRT runner (helpers.run_tflite)
serves every LiteRT-vs-Keras comparison.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
IMPORT_CALLS = {"__import__", "import_module", "importorskip"}


def _is_test_module(dotted: str) -> bool:
    """True when a dotted module name names a test module (test_*.py) or a conftest, at any level."""
    return any(part.startswith("test_") or part == "conftest" for part in dotted.split("."))


def _imported_modules(tree: ast.AST):
    """(line, dotted name) of every module an AST imports: import statements, relative imports and
    importlib.import_module / __import__ / pytest.importorskip calls with a literal name."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.module:
                yield node.lineno, node.module
            if node.level:  # `from . import test_x`: the names are modules
                for alias in node.names:
                    yield node.lineno, alias.name
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name in IMPORT_CALLS and isinstance(node.args[0].value, str):
                yield node.lineno, node.args[0].value


def imports_of_test_modules(source: str, filename: str = "<source>") -> list[str]:
    """'file:line imports name' for each test module (or conftest) that `source` imports."""
    tree = ast.parse(source, filename)
    return [f"{filename}:{line} imports {name}" for line, name in _imported_modules(tree) if _is_test_module(name)]


def _python_files():
    return sorted(p for p in TESTS.rglob("*.py") if "__pycache__" not in p.parts)


def _fixture_names(tree: ast.AST) -> set[str]:
    """Names of the functions decorated with pytest.fixture (called or not) in a module."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for decorator in node.decorator_list:
                target = decorator.func if isinstance(decorator, ast.Call) else decorator
                if ast.unparse(target) in ("pytest.fixture", "fixture"):
                    names.add(node.name)
    return names


def test_no_test_module_imports_another():
    found = []
    for path in _python_files():
        found += imports_of_test_modules(path.read_text(), str(path.relative_to(TESTS.parent)))
    assert not found, ("test modules import other test modules; move what they share to tests/helpers.py "
                       "(plain code) or tests/conftest.py (fixtures):\n" + "\n".join(found))


@pytest.mark.parametrize("source", [
    "from test_verification import build_artifacts",
    "import test_verification",
    "import test_verification as tv",
    "from tests.test_predictor import images",
    "from . import test_predictor",
    "from .test_predictor import images",
    "from conftest import digits",
    "import importlib\nimportlib.import_module('test_exporting')",
    "def f():\n    import test_viz",
    "x = __import__('test_models')",
])
def test_the_check_finds_every_form_of_import(source):
    assert len(imports_of_test_modules(source)) == 1, source


@pytest.mark.parametrize("source", [
    "from helpers import run_tflite",
    "import unittest\nfrom test import support",
    "from nin_keras.verification import load_artifact",
    "import pytest\npytest.importorskip('sklearn')",
])
def test_the_check_leaves_ordinary_imports_alone(source):
    assert imports_of_test_modules(source) == []


def test_conftest_fixtures_are_not_copied_into_test_modules():
    shared = _fixture_names(ast.parse((TESTS / "conftest.py").read_text()))
    assert {"digits", "digits_test", "trained_digits_model", "digits_artifacts"} <= shared
    copies = [f"{path.name}: {sorted(names)}" for path in _python_files() if path.name.startswith("test_")
              if (names := _fixture_names(ast.parse(path.read_text())) & shared)]
    assert not copies, "fixtures defined in conftest.py and again in a test module:\n" + "\n".join(copies)


def test_one_independent_litert_runner():
    """Only helpers.py builds a LiteRT interpreter: the tests compare through its assert_litert_matches_keras."""
    runners = [path.name for path in _python_files() if path.name not in ("helpers.py", Path(__file__).name)
               and any(name in path.read_text() for name in ("ai_edge_litert.interpreter", "lite.Interpreter("))]
    assert not runners, f"build LiteRT interpreters in tests/helpers.py, not in: {runners}"
