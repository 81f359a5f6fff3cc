"""The package's layout rules, checked on the source: imports run one way, functions stay readable.

These are the rules README.md's "Layout" section states; each test names the file and line that breaks one.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "nin_keras"

# Parts of the package in data-flow order: a part may import only parts of a lower rank (or its own).
# Rank 0 are the small shared modules every stage may use.
RANKS = {
    **dict.fromkeys(("errors", "checks", "formatting", "machine", "process_state", "export_layout", "_atomic",
                    "choices", "display"), 0),
    "data": 1,
    "models": 2,
    "viz": 3,
    "training": 4,
    "quantization": 5,
    "exporting": 6,
    "verification": 7,
    "workflows": 8,
    "__init__": 9,  # the lazy public API map: nothing inside the package goes through it but the CLI
    "cli": 10,
    "__main__": 11,
}
MAX_FUNCTION_LINES = 100
LAZY_MARK = "# lazy:"


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _part(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0].removesuffix(".py") if len(relative.parts) > 1 else relative.stem


def _imported_parts(node) -> list[str]:
    """nin_keras parts an import statement reaches (`from nin_keras import x` reaches part x, or __init__)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif node.level == 0 and node.module:
        if node.module == "nin_keras":
            return [alias.name if alias.name in RANKS else "__init__" for alias in node.names]
        names = [node.module]
    else:
        return []
    return [name.split(".")[1] for name in names if name.startswith("nin_keras.")]


def _import_edges():
    """(importing part, imported part, file, line) for every import, top-level or inside a function."""
    for path, tree in _modules():
        part = _part(path)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _imported_parts(node):
                    if target != part:
                        yield part, target, path.relative_to(ROOT), node.lineno


def test_every_part_has_a_rank():
    parts = {_part(path) for path, _ in _modules()}
    assert parts <= set(RANKS), f"new parts need a place in the data flow (RANKS): {sorted(parts - set(RANKS))}"


def test_imports_run_one_way():
    backwards = [f"{file}:{line}: {part} imports {target}" for part, target, file, line in _import_edges()
                 if RANKS[target] >= RANKS[part] and not (RANKS[part] == RANKS[target] == 0)]
    assert not backwards, "imports against the data flow:\n" + "\n".join(backwards)


def test_no_import_cycles_between_parts():
    graph: dict[str, set[str]] = {}
    for part, target, _, _ in _import_edges():
        graph.setdefault(part, set()).add(target)

    def reaches(start, goal, seen):
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and (seen.add(nxt) or reaches(nxt, goal, seen))):
                return True
        return False

    cyclic = sorted(part for part in graph if reaches(part, part, set()))
    assert not cyclic, f"parts on an import cycle: {cyclic}"


def test_functions_fit_on_a_screen():
    long = []
    for path, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = node.body
                if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
                    body = body[1:]  # the docstring does not count
                if not body:
                    continue
                lines = body[-1].end_lineno - body[0].lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {lines} lines")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines (split them):\n" + "\n".join(long)


def test_ruff_finds_nothing():
    """`ruff check` (pyproject.toml's [tool.ruff]: lines within 120 characters, pyflakes, pycodestyle, bugbear)
    passes on the package, the tests, the tools and the examples. ruff is in the dev extra."""
    completed = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "nin_keras", "tests", "tools",
                                "examples"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, f"ruff check found problems:\n{completed.stdout}{completed.stderr}"


def test_imports_inside_functions_say_why():
    """Imports belong at the top; inside a function only at the CLI boundary or with a `# lazy:` reason."""
    unexplained = []
    for path, tree in _modules():
        if _part(path) in ("cli", "__main__"):
            continue  # the CLI imports lazily so `--help` is fast and TensorFlow is quieted first
        lines = path.read_text(encoding="utf-8").splitlines()
        top_level = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top_level:
                statement = lines[node.lineno - 1:node.end_lineno]
                if not any(LAZY_MARK in line for line in statement):
                    unexplained.append(f"{path.relative_to(ROOT)}:{node.lineno}: {statement[0].strip()}")
    assert not unexplained, f"imports inside functions without a '{LAZY_MARK} reason' comment:\n" + \
        "\n".join(unexplained)


# People's roles in the team that builds this project: the project speaks of itself, not of who wrote it.
MIN_CITED_STEM = 4
TEAM_ROLES = re.compile(r"\bthe\s+lead\b|\bhelper\s+session\b", re.IGNORECASE)


def _tracked_files() -> list[Path]:
    try:
        listing = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / name for name in listing.splitlines() if (ROOT / name).is_file()]


def _outside_names(tracked: list[Path]) -> list[str]:
    """What only a file outside the repository could cite, read from where this checkout lies.

    The checkout's own absolute path and its neighbours' (`<parent>/<neighbour>`, `../<neighbour>`), and the
    names of files kept in those neighbouring folders that no tracked file carries (notes kept beside the
    repository, say). Nothing here is written down, so the list follows the checkout wherever it is. Names
    with stems shorter than MIN_CITED_STEM ("a.png", "run.py") are too generic to be a citation: a checkout in
    a shared temporary folder has such neighbours.
    """
    tracked_names = {path.name for path in tracked}
    names = [str(ROOT)]
    for neighbour in sorted(ROOT.parent.iterdir()):
        if neighbour == ROOT or not neighbour.is_dir():
            continue
        names += [str(neighbour), f"../{neighbour.name}/"]
        try:
            names += [entry.name for entry in neighbour.iterdir()
                      if entry.is_file() and "." in entry.name.strip(".") and entry.name not in tracked_names
                      and len(Path(entry.name).stem) >= MIN_CITED_STEM]
        except OSError:
            continue
    return names


def test_tracked_files_speak_of_this_project_only():
    this_file = Path(__file__).resolve()
    tracked = _tracked_files()
    outside = _outside_names(tracked)
    found = []
    for path in tracked:
        if path.resolve() == this_file:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # binary files (figures)
        for number, line in enumerate(text.splitlines(), 1):
            if TEAM_ROLES.search(line) or any(name in line for name in outside):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}")
    assert not found, "tracked files that cite places or people outside the repository:\n" + "\n".join(found)


def test_readme_layout_names_every_part():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    layout = readme[readme.index("## Layout"):]
    layout = layout[:layout.index("```", layout.index("```") + 3)]
    missing = []
    for path, _ in _modules():
        part = _part(path)
        if part in ("__init__", "__main__"):
            continue
        shown = f"{part}/" if path.parent != PACKAGE else f"{part}.py"
        if shown not in layout:
            missing.append(shown)
    assert not missing, f"README's Layout section does not show: {sorted(set(missing))}"
