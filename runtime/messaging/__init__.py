"""The door to NATS: the only package that imports ``nats`` (an import contract holds it).

``Messaging`` publishes, reads stored messages, subscribes, binds pull consumers and opens KV buckets; what it
hands out (``Delivery``, ``PullConsumer``, ``Subscription``, ``Bucket``) wraps the nats-py objects, and every NATS
failure leaves it as ``Unavailable``. Stream and consumer shapes: ``runtime.messaging.topology``; names:
``runtime.subjects``.
"""

from runtime.messaging.connection import (
    MESSAGING,
    ConsumerLoad,
    Messaging,
    Place,
    Published,
    StoredMessage,
    connect,
    encode,
    messaging_context,
)
from runtime.messaging.consumers import Delivery, PullConsumer, Subscription, consumer_of
from runtime.messaging.kv import Bucket, Entry, RevisionConflict
from runtime.messaging.objects import Objects, ObjectTooLarge, StoredObject, read_range
from runtime.messaging.watching import Watch

__all__ = [
    "MESSAGING",
    "Bucket",
    "ConsumerLoad",
    "Delivery",
    "Entry",
    "Messaging",
    "ObjectTooLarge",
    "Objects",
    "Place",
    "Published",
    "PullConsumer",
    "RevisionConflict",
    "StoredMessage",
    "StoredObject",
    "Subscription",
    "Watch",
    "connect",
    "consumer_of",
    "encode",
    "messaging_context",
    "read_range",
]
