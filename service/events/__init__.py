"""Study events: written with the change they describe, read in order, streamed as SSE.

write: emit and emit_many, in the writer's transaction (and on PostgreSQL the order lock
and the notification). read: a complete prefix of a study's events. listen: the thread
that LISTENs and wakes streams. stream: a study's events as server-sent-events frames.
"""

from service.events.listen import Listener, Wakeup, listener_for
from service.events.read import LAST_EVENT_ID, events_after, read_settled, take_order_lock
from service.events.stream import stream_frames
from service.events.write import CHANNEL, EVENT_TYPES, ORDER_LOCK, emit, emit_many

__all__ = [
    "CHANNEL",
    "EVENT_TYPES",
    "LAST_EVENT_ID",
    "ORDER_LOCK",
    "Listener",
    "Wakeup",
    "emit",
    "emit_many",
    "events_after",
    "listener_for",
    "read_settled",
    "stream_frames",
    "take_order_lock",
]
