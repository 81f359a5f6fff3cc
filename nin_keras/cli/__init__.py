"""`nin-keras`: a thin command line over the public Python API.

Each command lives in its own module in this package with `register(subparsers)`; handlers import
TensorFlow lazily so `main` can quiet TensorFlow's start-up logs first. Bad input (nin-keras' own errors) and
what the system refuses (OSError: a missing file, no permission, a full disk) become one line on stderr and
exit code 2, with the library's argument names written as this CLI's flags. Any other exception is a bug: one
line that says so and exit code 1. With -v the traceback comes first; the exit codes stay the same.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

from nin_keras import __version__
from nin_keras.errors import InvalidInputError, NinKerasError, one_line

# Command modules, in the order `--help` lists them (data flow order).
_COMMANDS = ("variants", "train", "export", "evaluate", "benchmark", "maps", "demo")

EXIT_USAGE = 2
EXIT_BUG = 1


class CLIError(InvalidInputError):
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
    from nin_keras.process_state import prefer_onednn, quiet_tensorflow

    prefer_onednn()  # before TensorFlow loads: 1.7x faster training on AVX2-only CPUs
    if not verbose:
        quiet_tensorflow()
    if getattr(args, "handler", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE

    try:
        from nin_keras.process_state import explain_missing_tensorflow  # lazy: after quiet_tensorflow

        with explain_missing_tensorflow(f"`nin-keras {args.command}`"):  # one line, not a traceback
            return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        sys.stderr.write("nin-keras: interrupted\n")
        return 130
    except (NinKerasError, OSError) as error:
        if verbose:
            traceback.print_exc()
        sys.stderr.write(f"nin-keras {args.command}: error: {error_message(error)}\n")
        return EXIT_USAGE
    except Exception as error:  # noqa: BLE001 (a bug, here or in a library: said as such, in one line)
        if verbose:
            traceback.print_exc()
        where = "with the traceback above" if verbose else "(rerun with -v for the traceback)"
        sys.stderr.write(f"nin-keras {args.command}: internal error: {type(error).__name__}: {one_line(error)}. "
                         f"This is a bug, not a problem with your input: please report it {where}.\n")
        return EXIT_BUG


def error_message(error: BaseException) -> str:
    """A user error's message on one line, with the library's argument names written as flags."""
    from nin_keras.cli.options import as_flags

    return as_flags(one_line(error))


if __name__ == "__main__":
    sys.exit(main())
