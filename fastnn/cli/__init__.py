"""The ``fastnn`` command: ``info``, ``train`` and ``check`` (one module each).

Every mistake in the arguments, and every error fastnn raises on purpose, ends the
command with one line ``fastnn: error: ...`` on stderr and exit status 2 (1 when
training diverges or a check fails), never a traceback.
"""

import argparse
import sys

from fastnn.cli import check, info, train
from fastnn.errors import FastnnError, TrainingDiverged

COMMANDS = (info, train, check)


class UsageError(Exception):
    """A bad command line, reported like any other error."""


class Parser(argparse.ArgumentParser):
    """argparse, but an error becomes a UsageError instead of usage text and exit."""

    def error(self, message):
        raise UsageError(message)


def build_parser():
    parser = Parser(prog="fastnn", description="fastnn's command line: see what can run here "
                                               "(info), train a network (train), and check "
                                               "gradients and backends (check).")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


def main(argv=None):
    """Run the command line ``argv`` (default: sys.argv[1:]); returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            raise UsageError("choose a command: info, train or check (fastnn --help explains them)")
        return args.run(args)
    except TrainingDiverged as error:
        return fail(error, 1)
    except (UsageError, FastnnError, ValueError, TypeError, OSError, ModuleNotFoundError) as error:
        return fail(error, 2)
    except KeyboardInterrupt:
        return fail("interrupted", 130)


def fail(error, status):
    """Print ``error`` as the one line ``fastnn: error: ...`` on stderr; return ``status``."""
    message = " ".join(str(error).split()) or type(error).__name__
    print(f"fastnn: error: {message}", file=sys.stderr)
    return status
