"""`nin-keras`: a thin command line over the public Python API.

Each command lives in its own module in this package with `register(subparsers)`; handlers import
TensorFlow lazily so `main` can quiet TensorFlow's start-up logs first. Bad input (ValueError,
FileNotFoundError, nin-keras' own errors) becomes one line on stderr and exit code 2, with no traceback
(with -v the traceback comes first; the exit code stays 2, so scripts see the same status either way).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

from nin_keras import __version__

# Command modules, in the order `--help` lists them (data flow order).
_COMMANDS = ("variants", "train", "export", "evaluate", "benchmark", "maps", "demo")

EXIT_USAGE = 2


class CLIError(Exception):
    """A user error found by the CLI itself."""


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line (argparse prints the usage block too)."""

    def error(self, message):
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nin-keras", description="Network In Network for Keras 3: train, quantize, export, verify.")
    parser.add_argument("--version", action="version", version=f"nin-keras {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show TensorFlow's own logs and full tracebacks (also NIN_KERAS_VERBOSE=1)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in _COMMANDS:
        importlib.import_module(f"nin_keras.cli.{name}").register(subparsers)
    return parser


def _verbose_requested(argv) -> bool:
    return os.environ.get("NIN_KERAS_VERBOSE", "") not in ("", "0") or "-v" in argv or "--verbose" in argv


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = _verbose_requested(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not verbose:
        from nin_keras.process_state import quiet_tensorflow

        quiet_tensorflow()
    if getattr(args, "handler", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE

    from nin_keras.errors import NinKerasError

    user_errors = (CLIError, NinKerasError, ValueError, FileNotFoundError, FileExistsError, NotADirectoryError,
                   IsADirectoryError, PermissionError)
    try:
        from nin_keras.process_state import explain_missing_tensorflow  # lazy: after quiet_tensorflow

        with explain_missing_tensorflow(f"`nin-keras {args.command}`"):  # one line, not a traceback
            return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        sys.stderr.write("nin-keras: interrupted\n")
        return 130
    except user_errors as error:
        if verbose:
            traceback.print_exc()
        message = " ".join(str(error).split()) or type(error).__name__
        sys.stderr.write(f"nin-keras {args.command}: error: {message}\n")
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
