"""Delivery tracking: every send and every event, stored, folded and queried (contract).

``Tracker.open()`` keeps everything in an SQLite file in the working directory;
``Tracker.open("postgresql://...")`` shares one PostgreSQL database between any number of
application and webhook processes. See docs/tracking.md.

    with Tracker.open() as tracker:
        mailer = Mailer.from_env(tracker=tracker)
        result = mailer.send(email)
        ...
        tracker.ingest(events)                      # from a webhook
        tracker.state(result.recipients[0].tracking_id).status
"""

from __future__ import annotations

from unimailtrack.tracking._alerts import Alert, AlertRules, SenderRate
from unimailtrack.tracking._health import HealthReport, ProviderHealth
from unimailtrack.tracking._live import ChangeStream
from unimailtrack.tracking._providers import ProviderRules
from unimailtrack.tracking._records import (
    Badge,
    BulkStats,
    DeadLetter,
    DomainAlert,
    IngestResult,
    Page,
    SendRecord,
    StateChange,
)
from unimailtrack.tracking._store import Store, StoreContentError, StoreError
from unimailtrack.tracking._suppression import ImportReport, InvalidRow, SoftBouncePolicy
from unimailtrack.tracking._tracker import SuppressionChange, Tracker

__all__ = [
    "Alert",
    "AlertRules",
    "Badge",
    "BulkStats",
    "ChangeStream",
    "DeadLetter",
    "DomainAlert",
    "HealthReport",
    "ImportReport",
    "IngestResult",
    "InvalidRow",
    "Page",
    "ProviderHealth",
    "ProviderRules",
    "SendRecord",
    "SenderRate",
    "SoftBouncePolicy",
    "StateChange",
    "Store",
    "StoreContentError",
    "StoreError",
    "SuppressionChange",
    "Tracker",
]
