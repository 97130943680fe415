"""krocket's message store, modelled on RocketMQ's ``DefaultMessageStore``.

``MessageStore`` is the facade the broker uses; the modules behind it are named after what they hold:
``commitlog`` (records appended in the one record format of ``krocket.common.record``, over
``mapped_file_queue``), ``dispatch`` (records into ``consume_queue`` and ``index_service``, and listeners),
``reader`` (pulls, offsets by time, key lookups), ``replica_records`` (bytes copied from a master),
``checkpoint``, ``recovery``, ``flush`` (fdatasync, group commit) and ``retention`` (deleting old segments,
disk watermarks).
"""

from krocket.broker.store.checkpoint import StoreLockedError
from krocket.broker.store.config import StoreConfig
from krocket.broker.store.message_store import GetResult, GetStatus, MessageStore, PutResult

__all__ = ["GetResult", "GetStatus", "MessageStore", "PutResult", "StoreConfig", "StoreLockedError"]
