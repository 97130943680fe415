"""Exit codes of krocket's commands, and the one-line failure they print.

0: done; 1: the command ran and failed (no name server answers, no such topic, a refused change); 2: a usage
error (a bad argument; argparse's and ``ConfigError``'s code); 3: ``consumer progress``: the group is unknown to
every broker; 4: ``consumer progress``: some broker did not answer, so the lag shown is incomplete."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable

from krocket.common.errors import ConfigError, KrocketError, MessageIllegalError

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_GROUP_UNKNOWN = 3
EXIT_BROKER_UNREACHABLE = 4


def fail(message: str, code: int = EXIT_ERROR) -> int:
    """Print ``krocket: error: MESSAGE`` on stderr (one line) and return ``code`` for the command to exit with."""
    print(f"krocket: error: {message}", file=sys.stderr, flush=True)
    return code


def exits_1_on_failure(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A command handler whose failures at run time (no name server answers, a broker refuses, no such topic)
    print one line and exit 1; bad input (``ConfigError``, an illegal name) still exits 2 through main."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except (ConfigError, MessageIllegalError):
            raise
        except KrocketError as exc:
            return fail(str(exc))

    return run
