"""``--tls`` / ``--tls-ca`` for the client and admin verbs: krocket.client's ``tls`` and ``tls_ca`` options.

Without ``--tls`` the clients follow ``KROCKET_TLS_ENABLE`` and ``KROCKET_TLS_CA``
(``krocket.common.remoting.tls.client_tls``).
"""

from __future__ import annotations

import argparse
from typing import Any


def add_tls_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tls",
        action="store_const",
        const=True,
        default=None,
        help="connect to name servers and brokers with TLS (default $KROCKET_TLS_ENABLE)",
    )
    parser.add_argument(
        "--tls-ca", default=None, help="CA file that server certificates must chain to (default $KROCKET_TLS_CA)"
    )


def tls_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The client keywords for what ``add_tls_arguments`` parsed (``--tls-ca`` alone means ``--tls``)."""
    tls = args.tls if args.tls is not None else (True if args.tls_ca else None)
    return {"tls": tls, "tls_ca": args.tls_ca}
