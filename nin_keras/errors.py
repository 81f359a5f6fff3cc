"""Exceptions the package raises for problems a user can fix, and `one_line` to print any error on one line.

Every error a user can cause (a bad argument, file, dataset or model) is a `NinKerasError`, with a message
that names the problem and the fix, so `except NinKerasError` catches them all. Each also inherits the builtin
it refines (`InvalidInputError` is a `ValueError`, `MissingFileError` a `FileNotFoundError`, ...), so code
written against the builtins keeps working. Messages name the Python arguments (`pass overwrite=True`); the
CLI prints them with its own flags (`--overwrite`). The CLI turns any of them into one line on stderr and exit
code 2; any other exception there is reported as a bug.
"""

from __future__ import annotations


class NinKerasError(Exception):
    """Base class of nin-keras' own errors."""


class InvalidInputError(NinKerasError, ValueError):
    """An argument, file or dataset that cannot be used as given."""


class IncompatibleModelError(InvalidInputError):
    """A model that does not fit what it is used with (input shape, class count, layer types)."""


class ConversionError(NinKerasError, RuntimeError):
    """The TFLite converter (or another exporter) failed; the message carries its own."""


class UnsafeFileError(InvalidInputError):
    """A file that would run code when loaded (a pickle with a code payload, a Lambda layer, ...)."""


class MissingFileError(InvalidInputError, FileNotFoundError):
    """A file or folder the user named (or that a run folder should hold) does not exist."""


class NotAFolderError(InvalidInputError, NotADirectoryError):
    """A path that should be a folder is a file."""


class NotAFileError(InvalidInputError, IsADirectoryError):
    """A path that should be a file is a folder."""


class OutputExistsError(InvalidInputError, FileExistsError):
    """An output folder already exists and replacing it was not asked for."""


class MissingDependencyError(InvalidInputError, ImportError):
    """An optional package is not installed (the message says what to pip install)."""


class StorageError(NinKerasError, OSError):
    """Output could not be written: no space left, a read-only or unwritable folder (the message says which)."""


def one_line(error: BaseException, limit: int | None = None) -> str:
    """`error`'s message on one line: whitespace runs (newlines included) become one space.

    Args:
        error: any exception.
        limit: keep at most this many characters (None: all).

    Returns:
        The message, or the exception's type name when the message is empty.
    """
    message = " ".join(str(error).split())[:limit]
    return message or type(error).__name__
