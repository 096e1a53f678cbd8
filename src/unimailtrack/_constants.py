"""Every tunable default in one place."""

from __future__ import annotations

from datetime import timedelta

DEFAULT_TIMEOUT = 30.0
"""Seconds a provider request may take (connect, read and write each)."""

DEFAULT_MAX_RETRIES = 2
"""How many times a retryable failure is retried (so at most three attempts)."""

INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 8.0
MAX_RETRY_AFTER = 60.0
"""A provider's Retry-After is honoured up to this many seconds; beyond it we give up."""

DEFAULT_MAX_CONCURRENCY = 50
"""Requests in flight at once for one bulk send on the async path."""

DEFAULT_WEBHOOK_TOLERANCE = timedelta(minutes=5)
DEFAULT_MAX_WEBHOOK_BODY = 10 * 1024 * 1024

MAX_PINNED_TOKENS = 10_000
"""Webhook tokens a receiver keeps pinned to the request that could not be stored under them
(so that only that request may use them until the store takes it); the oldest go first."""
WEBHOOK_CONCURRENCY = 2
"""Webhook bodies one web app process verifies, parses and stores at once (see
``web._app.webhook_endpoint``); more wait their turn."""

HEALTH_SILENCE = timedelta(hours=6)
"""A provider is unhealthy when sends went out through it during this long and no event came
back from it in that time: the usual sign that its webhook died."""
HEALTH_GRACE = timedelta(minutes=15)
"""Sends younger than this do not count against a provider's health: it has not had time to
report them yet."""
ORPHAN_AFTER = timedelta(hours=1)
"""An event that no send has claimed this long after its arrival counts as an orphan."""

DEFAULT_BODY_TIMEOUT = 30.0
"""Seconds a request body may take to arrive in full; a slower one is answered 408 and its
connection closed, so that a client trickling bytes cannot hold a worker."""
