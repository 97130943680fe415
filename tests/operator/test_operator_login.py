"""`krocket operator -A` outside a pod, as docs/kubernetes.md runs it: it logs in with the kubeconfig named by
$KUBECONFIG (here pointing at kmock's emulator) and watches the krocket resources."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import kmock
import pytest

from tests.operator.kopf_harness import WATCHED, StampingEmulator, declare_resources, wait_for

pytestmark = [
    pytest.mark.kmock(cls=StampingEmulator),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

KUBECONFIG = """\
apiVersion: v1
kind: Config
current-context: kmock
contexts:
- name: kmock
  context: {{cluster: kmock, user: tester, namespace: default}}
clusters:
- name: kmock
  cluster: {{server: "{server}"}}
users:
- name: tester
  user: {{token: not-checked}}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def k8s(kmock: Any) -> Any:
    declare_resources(kmock)
    return kmock


async def test_operator_outside_a_pod_logs_in_with_the_kubeconfig_and_watches_the_crds(
    k8s: Any, tmp_path: Path
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG.format(server=str(k8s.url).rstrip("/")))
    log = tmp_path / "operator.log"
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(tmp_path)}  # no ~/.kube/config of the host
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "krocket.cli.main", "operator", "-A", "--liveness-port", str(_free_port())],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        await wait_for(
            lambda: all(len(k8s[kmock.action.WATCH, k8s.resource(r)]) > 0 for r in WATCHED) or proc.poll() is not None,
            timeout=60,
            what="the operator to watch every krocket resource",
        )
        assert proc.poll() is None, log.read_text()
    finally:
        proc.terminate()
        proc.wait(30)
    text = log.read_text()
    assert "Activity 'login' succeeded" in text, text
    assert "no credentials were retrieved" not in text and "TypeError" not in text, text
