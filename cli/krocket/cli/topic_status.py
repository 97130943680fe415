"""``krocket topic status``: each queue of a topic on every broker (min and max offsets, last update time)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def register(verbs: Any, namesrv_arg: Callable[[argparse.ArgumentParser], None]) -> None:
    """Adds ``topic status`` to the ``topic`` verbs (filled in by the mqadmin-verbs work)."""
