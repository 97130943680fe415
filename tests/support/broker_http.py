"""A broker's (or name server's) HTTP admin API, called from a test: JSON in, JSON out."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from tests.support.cluster import ChildProcess


def http_call(child: ChildProcess, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
    """``method path`` with ``body`` as JSON; the answer's JSON. An HTTP error raises ``urllib.error.HTTPError``."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{child.http_port}{path}", data=data, method=method)
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())
