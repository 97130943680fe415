"""krocket: a RocketMQ-style distributed message queue with a Kubernetes operator.

The components live in sub-packages: ``krocket.common`` (protocol, message model), ``krocket.namesrv``,
``krocket.broker``, ``krocket.client``, ``krocket.operator`` and ``krocket.cli``.
"""

__version__ = "0.1.0"
