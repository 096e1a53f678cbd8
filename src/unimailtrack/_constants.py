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

DEFAULT_BODY_TIMEOUT = 30.0
"""Seconds a request body may take to arrive in full; a slower one is answered 408 and its
connection closed, so that a client trickling bytes cannot hold a worker."""
