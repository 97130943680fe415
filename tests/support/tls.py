"""Test certificates: a throwaway CA (trustme) and a server certificate for localhost and 127.0.0.1."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class Certificates:
    ca_path: Path  # the CA clients trust
    server_pem: Path  # the server's key and certificate chain in one PEM file
    client_pem: Path  # a client certificate issued by the same CA

    @property
    def server_settings(self) -> dict[str, str]:
        """Broker settings for these certificates (RocketMQ-style names)."""
        return {"tlsServerCertPath": str(self.server_pem), "tlsServerKeyPath": str(self.server_pem)}


def make_certificates(directory: Path) -> Certificates:
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    ca_path, server_pem, client_pem = directory / "ca.pem", directory / "server.pem", directory / "client.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(server_pem))
    ca.issue_cert("client.krocket.test").private_key_and_cert_chain_pem.write_to_path(str(client_pem))
    return Certificates(ca_path, server_pem, client_pem)
