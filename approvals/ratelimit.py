"""How many new requests one requester may make per minute (the policy's ``rate_limit``).

:class:`RequestRateLimiter` counts each requester's new requests in a moving window of 60 seconds
with the ``limits`` library (``MovingWindowRateLimiter``): a request is allowed when fewer than the
limit were allowed in the 60 seconds before it; a refused one is not counted, so the requester may
ask again as soon as their oldest request of the window is a minute old.

The counts live in the memory of the process (``limits``' ``MemoryStorage``; ``limits`` offers no
storage on an SQL database). With several replicas behind one Slack app, each replica counts on
its own, so a requester may make up to the limit per minute on each replica that receives their
commands; a restart forgets the counts. :class:`RequestRateLimiter` accepts another ``limits``
storage (Redis, Memcached or MongoDB, with their client libraries) that replicas could share;
opsgate does not configure one.
"""

from __future__ import annotations

import threading

from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage, Storage
from limits.strategies import MovingWindowRateLimiter

from approvals.lifecycle import Actor


class RequestRateLimiter:
    """Per-requester counts of new requests in a moving window of 60 seconds.

    ``storage`` is a ``limits`` storage with moving-window support (default: a new
    ``MemoryStorage``, per process). Thread-safe: hits are taken under a lock of its own, since
    ``MemoryStorage`` creates (and its expiry timer drops) its per-key locks lazily, so that two
    threads asking at once for a new key could otherwise both take the last place.
    """

    def __init__(self, storage: Storage | None = None) -> None:
        self._limiter = MovingWindowRateLimiter(storage if storage is not None else MemoryStorage())
        self._lock = threading.Lock()

    def hit(self, requester: Actor, per_minute: int) -> bool:
        """Count one new request of ``requester`` and return True, or return False (counting
        nothing) when ``requester`` already made ``per_minute`` (an int >= 1) in the last 60
        seconds. A person and an agent with the same ID are counted apart."""
        item = RateLimitItemPerMinute(per_minute)
        with self._lock:
            return self._limiter.hit(item, "requests", str(requester.kind), requester.id)
