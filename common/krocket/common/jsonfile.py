"""Atomic JSON files: write a temp file, fsync it, rename it over the old one, fsync the folder."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_json_atomic(path: str | Path, data: Any, compact: bool = False) -> None:
    """``compact``: no indentation or key sorting (large tables: several times faster)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        if compact:
            json.dump(data, fh, separators=(",", ":"))
        else:
            json.dump(data, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_json(path: str | Path, default: Any) -> Any:
    """The file's JSON, ``default`` when it does not exist. A corrupt file raises ``ValueError``."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        return default
