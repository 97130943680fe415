"""krocket's message store, modelled on RocketMQ's ``DefaultMessageStore``.

``MessageStore`` is the facade the broker uses; the modules behind it are named after what they hold:
``commitlog`` (over ``mapped_file_queue``), ``consume_queue``, ``index_service``, ``checkpoint``,
``recovery``, ``flush`` and ``retention``.
"""

from krocket.broker.store.checkpoint import StoreLockedError
from krocket.broker.store.config import StoreConfig
from krocket.broker.store.message_store import GetResult, GetStatus, MessageStore, PutResult

__all__ = ["GetResult", "GetStatus", "MessageStore", "PutResult", "StoreConfig", "StoreLockedError"]
