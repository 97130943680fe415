"""When the local supervisor restarts a child that died, and how it names the way a child ended."""

from __future__ import annotations

import enum
import signal


class RestartPolicy(enum.Enum):
    ALWAYS = "always"
    ON_FAILURE = "on-failure"
    NEVER = "never"

    def restarts(self, returncode: int) -> bool:
        """Whether a child that ended with ``returncode`` (negative: killed by that signal) is started again."""
        if self is RestartPolicy.ALWAYS:
            return True
        return self is RestartPolicy.ON_FAILURE and returncode != 0


POLICY_NAMES = [p.value for p in RestartPolicy]

BACKOFF_FIRST_S = 0.5
BACKOFF_CAP_S = 30.0
STABLE_AFTER_S = 10.0
"""A child that ran this long before it died starts its backoff from the beginning again."""
GIVE_UP_AFTER = 6
"""Consecutive deaths before it was ready after which the supervisor stops restarting a child."""


def backoff_s(consecutive_failures: int) -> float:
    """The wait before restart number ``consecutive_failures`` (1, 2, ...): doubling from 0.5 s, at most 30 s."""
    return min(BACKOFF_CAP_S, BACKOFF_FIRST_S * 2 ** max(0, consecutive_failures - 1))


def describe_exit(returncode: int) -> str:
    """``exited with code 2`` or ``killed by SIGKILL`` for a ``Popen.returncode``."""
    if returncode >= 0:
        return f"exited with code {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return f"killed by {name}"
