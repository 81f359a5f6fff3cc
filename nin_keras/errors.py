"""Exceptions the package raises for problems a user can fix.

Bad input raises `ValueError` / `FileNotFoundError` (or these subclasses of them), with a message that names
the problem and the fix. The CLI turns any of them into one line on stderr and exit code 2.
"""


class NinKerasError(Exception):
    """Base class of nin-keras' own errors."""


class InvalidInputError(NinKerasError, ValueError):
    """An argument, file or dataset that cannot be used as given."""


class MissingDependencyError(InvalidInputError, ImportError):
    """An optional package is not installed (the message says what to pip install)."""


class IncompatibleModelError(InvalidInputError):
    """A model that does not fit what it is used with (input shape, class count, layer types)."""


class ConversionError(NinKerasError, RuntimeError):
    """The TFLite converter (or another exporter) failed; the message carries its own."""


class UnsafeFileError(InvalidInputError):
    """A file that would run code when loaded (a pickle with a code payload, a Lambda layer, ...)."""
