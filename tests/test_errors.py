"""One error family: every error a user can cause is a `NinKerasError`, and the CLI tells them from bugs.

The package raises no bare builtin for bad input (read from the source); the CLI prints package errors and
OSErrors in one line with exit code 2, with the library's argument names written as its flags, and anything
else as a bug (exit code 1), with the traceback under -v.
"""

from __future__ import annotations

import ast
import errno
import importlib
from pathlib import Path

import pytest

from helpers import REPO_ROOT, run_cli
from nin_keras import errors
from nin_keras.cli import options

PACKAGE = REPO_ROOT / "nin_keras"
# Builtins that stand for bad input: the package raises its own subclass of them instead.
USER_ERROR_BUILTINS = {"ValueError", "TypeError", "KeyError", "IndexError", "RuntimeError", "OSError", "IOError",
                       "FileNotFoundError", "FileExistsError", "NotADirectoryError", "IsADirectoryError",
                       "PermissionError", "ImportError", "ModuleNotFoundError", "Exception"}
# (file, builtin): raises that are not about a user's input.
NOT_USER_ERRORS = {
    ("nin_keras/choices.py", "ImportError"),  # the package's own name lists disagree: a bug, found at import
    ("nin_keras/exporting/targets.py", "ImportError"),  # a writer for a target the registry lacks: likewise
}


def _raised_name(node: ast.Raise) -> str | None:
    """The name of what `raise X(...)` / `raise X` / `raise module.X(...)` raises (None for a bare re-raise)."""
    target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
    if isinstance(target, ast.Attribute):
        return target.attr
    return target.id if isinstance(target, ast.Name) else None


def _builtin_raises(source: str, relative: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Raise) and node.exc is not None:
            name = _raised_name(node)
            if name in USER_ERROR_BUILTINS and (relative, name) not in NOT_USER_ERRORS:
                found.append(f"{relative}:{node.lineno}: raise {name}")
    return found


def test_the_package_raises_no_bare_builtin_for_bad_input():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(REPO_ROOT).as_posix()
        found += _builtin_raises(path.read_text(encoding="utf-8"), relative)
    assert not found, "raise a nin_keras.errors class (it may inherit the builtin) instead of:\n" + "\n".join(found)


@pytest.mark.parametrize("source, caught", [
    ("raise ValueError('x')", True),
    ("raise builtins.FileNotFoundError('x')", True),
    ("raise TypeError", True),
    ("raise InvalidInputError('x')", False),
    ("raise", False),
    ("raise error from None", False),
])
def test_the_source_check_finds_bare_builtins(source, caught):
    assert bool(_builtin_raises(source, "nin_keras/x.py")) == caught


def test_every_error_class_of_the_package_is_a_nin_keras_error():
    """Exception classes defined anywhere in nin_keras (trainer's TrainingDivergedError, the CLI's CLIError)."""
    outside = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = [node.name for node in tree.body if isinstance(node, ast.ClassDef) and node.name.endswith("Error")]
        if not names:
            continue
        parts = path.relative_to(REPO_ROOT).with_suffix("").parts
        module = importlib.import_module(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
        outside += [f"{module.__name__}.{name}" for name in names
                    if not issubclass(getattr(module, name), errors.NinKerasError)]
    assert not outside, f"not NinKerasError subclasses: {outside}"


@pytest.mark.parametrize("error_class, builtin", [
    (errors.MissingFileError, FileNotFoundError), (errors.NotAFolderError, NotADirectoryError),
    (errors.NotAFileError, IsADirectoryError), (errors.OutputExistsError, FileExistsError),
    (errors.MissingDependencyError, ImportError), (errors.UnsafeFileError, ValueError),
])
def test_package_errors_are_also_the_builtins_older_code_catches(error_class, builtin):
    error = error_class("message")
    assert isinstance(error, builtin) and isinstance(error, errors.InvalidInputError)
    assert str(error) == "message"


def test_one_line_flattens_whitespace_cuts_and_names_an_empty_error():
    assert errors.one_line(ValueError("a\n  b\tc ")) == "a b c"
    assert errors.one_line(ValueError("abcdef"), 3) == "abc"
    assert errors.one_line(KeyError()) == "KeyError"


@pytest.mark.parametrize("message, shown", [
    ("Pass resume=True to continue, overwrite=True to replace it, or choose another out_dir= or name=.",
     "Pass --resume to continue, --overwrite to replace it, or choose another --out or --name."),
    ("more than epochs=3: pass epochs=7 or more.", "more than --epochs 3: pass --epochs 7 or more."),
    ("try learning_rate=0.001) or precision='float32' (", "try --lr 0.001) or --precision float32 ("),
    ("with float_layers=['conv1', 'conv2'] or qat_epochs=0.",
     "with --qat-float-layers conv1,conv2 or --qat-epochs 0."),
    ("pass data= (the training dataset) or tensorboard=False.",
     "pass --dataset (the training dataset) or --no-tensorboard."),
    # Arguments without a flag, a False without a flag of its own and attribute-like text stay as written.
    ("pooling='avg' needs include_top=False; resume=False; layer.name=x", "pooling='avg' needs include_top=False; "
     "resume=False; layer.name=x"),
])
def test_the_cli_writes_argument_names_as_its_flags(message, shown):
    assert options.as_flags(message) == shown


def _option_strings(parser) -> set[str]:
    found = set()
    for action in parser._actions:  # argparse keeps no public list of a parser's options
        found.update(action.option_strings)
        if isinstance(action.choices, dict):  # the commands' own parsers
            for command in action.choices.values():
                found |= _option_strings(command)
    return found


def test_every_flag_in_the_table_is_an_option_of_the_cli():
    from nin_keras.cli import build_parser

    table = set(options.FLAGS.values()) | set(options.FALSE_FLAGS.values())
    missing = table - _option_strings(build_parser())
    assert not missing, f"flags in the table that no command has: {sorted(missing)}"


def _fail_with(monkeypatch, error):
    """Makes `nin-keras variants` raise `error`."""
    def handler(args):
        raise error

    monkeypatch.setattr("nin_keras.cli.variants.variants_command", handler)


@pytest.mark.parametrize("error", [ValueError("shapes (3,) and (4,) not aligned"), TypeError("unhashable"),
                                   RuntimeError("cuDNN failed"), KeyError("conv1")])
def test_an_exception_that_is_not_the_packages_is_reported_as_a_bug(error, monkeypatch, capfd):
    _fail_with(monkeypatch, error)
    code, _, err = run_cli(["variants"], capfd)
    lines = err.strip().splitlines()
    assert code == 1, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"nin-keras variants: internal error: {type(error).__name__}: ")
    assert "a bug" in lines[0] and "-v" in lines[0] and errors.one_line(error) in lines[0]

    code, _, err = run_cli(["-v", "variants"], capfd)
    assert code == 1 and "Traceback" in err and "internal error" in err.strip().splitlines()[-1]


@pytest.mark.parametrize("error, fragment", [
    (OSError(errno.ENOSPC, "No space left on device"), "No space left on device"),
    (PermissionError(errno.EACCES, "Permission denied", "/runs/a"), "Permission denied: '/runs/a'"),
    (errors.InvalidInputError("Pass overwrite=True to replace it."), "Pass --overwrite to replace it."),
])
def test_package_errors_and_os_errors_are_one_line_and_exit_2(error, fragment, monkeypatch, capfd):
    _fail_with(monkeypatch, error)
    code, _, err = run_cli(["variants"], capfd)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("nin-keras variants: error: ") and fragment in lines[0]


def test_an_output_folder_under_a_file_is_one_line_and_exit_2(tmp_path, capfd):
    """A real OSError from the file system: the demo's folder inside a file."""
    blocker = tmp_path / "notes.txt"
    blocker.write_text("not a folder")
    code, _, err = run_cli(["demo", "--out", blocker / "demo"], capfd)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "Not a directory" in lines[0] and str(blocker) in lines[0]
    assert Path(blocker).read_text() == "not a folder"
