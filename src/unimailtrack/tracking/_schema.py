"""The schema, as numbered forward migrations that run when a tracker opens.

``schema_migrations`` records every version applied. Opening a store applies what is missing,
all in one transaction (both backends have transactional DDL), under a lock so that many
processes starting at once migrate exactly once. A database migrated by a newer unimailtrack
than this one is refused rather than misread.

A migration is append-only: once released, its statements never change; a later change is a
new migration. Column kinds in braces are spelled by the dialect: ``key`` is text compared
byte by byte (ids, keys, what is sorted), ``json`` a queryable document (PostgreSQL JSONB),
``document`` one kept as it came (PostgreSQL JSON: cheaper to store, key order kept).

Tables (times are integer microseconds since the epoch, UTC):

- ``messages``: one row per (message, recipient), keyed by tracking id. The send columns are
  filled when the send is recorded; the state columns are folded from the events as they
  arrive (they may arrive first). ``rank``/``decided_at_us``/``event_id`` identify the event
  that decides the badge; ``seen`` has one bit per event type ever received (``SEEN_BITS``).
- ``events``: every event, whole, unique by ``event_id``; ``tracking_id`` is NULL while an
  event that carries none waits for its send.
- ``links``: (provider, provider message id, recipient) -> tracking id; the meeting point
  where an event that carries no tracking id finds its send, whichever is written first.
- ``suppressions`` (version 1; replaced by ``suppression_history`` in version 3: every claim
  made about an address, with ``standing`` marking the one that stands in each scope; see
  ``_suppression``), ``dead_letters``, ``nonces``: the suppression list, unparseable webhook
  bodies, and webhook tokens already seen (with a digest of the request that spent each, when
  it was spent together with its events).
- ``event_ids`` (PostgreSQL): every event id received within the deduplication window, with
  when; on PostgreSQL ``events`` is partitioned by ``received_at_us`` (``_partitions``), and a
  unique index of a partitioned table must hold the partition key, so the id's uniqueness
  lives here instead.

A migration may add statements for one backend only (``per_dialect``), run after its shared
statements there and nowhere else.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from types import MappingProxyType

from unimailtrack.model import EventType
from unimailtrack.tracking._store import Dialect, Program, Query, StoreError

__all__ = ["LATEST", "MIGRATIONS", "SEEN_BITS", "Migration", "column_kinds", "migrate"]

SEEN_BITS: Mapping[EventType, int] = MappingProxyType(
    {
        EventType.UNKNOWN: 1 << 0,
        EventType.ACCEPTED: 1 << 1,
        EventType.PROCESSED: 1 << 2,
        EventType.DEFERRED: 1 << 3,
        EventType.DELIVERED: 1 << 4,
        EventType.BOUNCED: 1 << 5,
        EventType.DROPPED: 1 << 6,
        EventType.REJECTED: 1 << 7,
        EventType.FAILED: 1 << 8,
        EventType.OPENED: 1 << 9,
        EventType.CLICKED: 1 << 10,
        EventType.COMPLAINED: 1 << 11,
        EventType.UNSUBSCRIBED: 1 << 12,
        EventType.RESUBSCRIBED: 1 << 13,
    }
)
"""The bit ``messages.seen`` sets for each event type: part of the stored format."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    statements: Sequence[str]
    per_dialect: Mapping[str, Sequence[str]] = field(default_factory=dict)
    """Statements for one backend (by ``Dialect.name``), after the shared ones."""

    def statements_for(self, dialect: str) -> tuple[str, ...]:
        return (*self.statements, *self.per_dialect.get(dialect, ()))


_V1 = Migration(
    1,
    "messages, events, links, suppressions, dead letters and nonces",
    (
        """
        CREATE TABLE messages (
            tracking_id {key} PRIMARY KEY,
            bulk_id {key},
            provider {text},
            message_id {text},
            sender {text},
            recipient {text},
            recipient_key {key},
            name {text},
            subject {text},
            category {text},
            metadata {json},
            tags {json},
            track_opens {bool},
            track_clicks {bool},
            send_status {text},
            send_error {text},
            sent_at_us {bigint},
            status {text},
            previous_status {text},
            reason {text},
            bounce {text},
            smtp_status {text},
            rank {int},
            decided_at_us {bigint},
            event_id {key},
            expired {bool} NOT NULL DEFAULT FALSE,
            seen {bigint} NOT NULL DEFAULT 0,
            opens {int} NOT NULL DEFAULT 0,
            clicks {int} NOT NULL DEFAULT 0,
            first_delivered_at_us {bigint},
            first_opened_at_us {bigint},
            first_clicked_at_us {bigint},
            updated_at_us {bigint}
        )
        """,
        "CREATE INDEX messages_by_recipient ON messages (recipient_key, sent_at_us, tracking_id)",
        "CREATE INDEX messages_by_bulk ON messages (bulk_id)",
        "CREATE INDEX messages_by_sent_at ON messages (sent_at_us, tracking_id)",
        "CREATE INDEX messages_deferred ON messages (decided_at_us) WHERE status = 'deferred'",
        """
        CREATE TABLE events (
            event_id {key} PRIMARY KEY,
            provider {text} NOT NULL,
            type {text} NOT NULL,
            provider_event {text} NOT NULL,
            recipient {text} NOT NULL,
            recipient_key {key} NOT NULL,
            domain {text} NOT NULL,
            message_id {text},
            message_key {key},
            tracking_id {key},
            timestamp_us {bigint} NOT NULL,
            rank {int} NOT NULL,
            reason {text},
            bounce {text},
            smtp_status {text},
            attempt {int},
            url {text},
            user_agent {text},
            machine {bool},
            tags {json},
            metadata {json},
            raw {document} NOT NULL,
            received_at_us {bigint} NOT NULL
        )
        """,
        "CREATE INDEX events_by_tracking_id ON events (tracking_id)",
        """
        CREATE INDEX events_waiting ON events (provider, message_key, recipient_key)
        WHERE tracking_id IS NULL
        """,
        "CREATE INDEX events_bounces ON events (timestamp_us) WHERE type = 'bounced'",
        """
        CREATE TABLE links (
            provider {key} NOT NULL,
            message_key {key} NOT NULL,
            recipient_key {key} NOT NULL,
            tracking_id {key},
            orphans {bool} NOT NULL DEFAULT FALSE,
            PRIMARY KEY (provider, message_key, recipient_key)
        )
        """,
        """
        CREATE TABLE suppressions (
            address_key {key} PRIMARY KEY,
            address {text} NOT NULL,
            reason {text},
            cause {text} NOT NULL,
            created_at_us {bigint} NOT NULL,
            event_id {key},
            tracking_id {key}
        )
        """,
        """
        CREATE TABLE dead_letters (
            id {serial},
            provider {text} NOT NULL,
            received_at_us {bigint} NOT NULL,
            reason {text} NOT NULL,
            headers {json} NOT NULL,
            body {blob} NOT NULL
        )
        """,
        "CREATE INDEX dead_letters_by_time ON dead_letters (received_at_us)",
        """
        CREATE TABLE nonces (
            nonce {key} PRIMARY KEY,
            expires_at_us {bigint} NOT NULL
        )
        """,
    ),
)

_V2_NONCE_DIGEST = Migration(
    2,
    "the digest of the request that spent each webhook token",
    ("ALTER TABLE nonces ADD COLUMN digest {key}",),
)
"""A token spent together with its request's events keeps what that request said, so that
the provider's retry of it is told apart from a different request under the same token."""

_V3_SUPPRESSION_HISTORY = Migration(
    3,
    "suppression scopes, provenance and history; the stream of each send",
    (
        """
        CREATE TABLE suppression_history (
            id {serial},
            address_key {key} NOT NULL,
            scope_key {key} NOT NULL,
            action {text} NOT NULL,
            address {text} NOT NULL,
            cause {text} NOT NULL,
            reason {text},
            source {text} NOT NULL,
            provider {text},
            event_id {key},
            tracking_id {key},
            at_us {bigint} NOT NULL,
            expires_at_us {bigint},
            recorded_at_us {bigint} NOT NULL,
            standing {bool} NOT NULL
        )
        """,
        """
        CREATE INDEX suppression_history_by_address ON suppression_history
        (address_key, scope_key)
        """,
        """
        CREATE INDEX suppressions_standing ON suppression_history (at_us, address_key, scope_key)
        WHERE standing
        """,
        """
        CREATE INDEX suppressions_soft_limit ON suppression_history (address_key)
        WHERE standing AND cause = 'soft-bounce-limit'
        """,
        """
        INSERT INTO suppression_history (address_key, scope_key, action, address, cause, reason,
            source, provider, event_id, tracking_id, at_us, expires_at_us, recorded_at_us,
            standing)
        SELECT address_key, '', 'added', address,
            CASE WHEN event_id IS NULL AND cause = 'unknown' THEN 'manual' ELSE cause END,
            reason, CASE WHEN event_id IS NULL THEN 'manual' ELSE 'event' END, NULL, event_id,
            tracking_id, created_at_us, NULL, created_at_us, TRUE
        FROM suppressions ORDER BY address_key
        """,
        "DROP TABLE suppressions",
        """
        CREATE TABLE suppression_locks (
            bucket {int} PRIMARY KEY
        )
        """,
        "ALTER TABLE messages ADD COLUMN stream {text}",
        """
        CREATE INDEX events_soft_bounces ON events (recipient_key, timestamp_us)
        WHERE (type = 'bounced' AND bounce = 'soft') OR type = 'delivered'
        """,
    ),
)

_V4_EVENTS_BY_PROVIDER = Migration(
    4,
    "the last event received from each provider, read from an index",
    ("CREATE INDEX events_by_provider ON events (provider, received_at_us)",),
)
"""Provider health asks, per provider, when its last event arrived: without this index that
is a scan of every event."""

_V5_DELIVERABILITY = Migration(
    5,
    "deliverability: sender-reputation alerts and the outbound webhook outbox",
    (
        """
        CREATE TABLE alerts (
            id {key} PRIMARY KEY,
            kind {text} NOT NULL,
            scope {text} NOT NULL,
            opened_at_us {bigint} NOT NULL,
            closed_at_us {bigint},
            sequence {int} NOT NULL,
            updated_at_us {bigint} NOT NULL,
            body {json} NOT NULL
        )
        """,
        "CREATE INDEX alerts_open ON alerts (opened_at_us) WHERE closed_at_us IS NULL",
        "CREATE INDEX alerts_by_opened_at ON alerts (opened_at_us)",
        """
        CREATE TABLE outbox (
            id {serial},
            endpoint {key} NOT NULL,
            msg_id {key} NOT NULL,
            event_type {text} NOT NULL,
            payload {document} NOT NULL,
            created_at_us {bigint} NOT NULL,
            next_attempt_us {bigint} NOT NULL,
            attempts {int} NOT NULL,
            status {text} NOT NULL,
            lease_until_us {bigint},
            last_error {text},
            delivered_at_us {bigint}
        )
        """,
        "CREATE UNIQUE INDEX outbox_by_message ON outbox (endpoint, msg_id)",
        "CREATE INDEX outbox_due ON outbox (status, next_attempt_us)",
    ),
)
"""``alerts``: every alert, whole (``body``), with the columns it is looked up by.
``outbox``: one row per (endpoint, message) to deliver; ``status`` is ``pending``,
``delivered`` or ``failed``; a claimed row carries a lease."""

_EVENT_COLUMNS_DDL = """
            event_id {key} NOT NULL,
            provider {text} NOT NULL,
            type {text} NOT NULL,
            provider_event {text} NOT NULL,
            recipient {text} NOT NULL,
            recipient_key {key} NOT NULL,
            domain {text} NOT NULL,
            message_id {text},
            message_key {key},
            tracking_id {key},
            timestamp_us {bigint} NOT NULL,
            rank {int} NOT NULL,
            reason {text},
            bounce {text},
            smtp_status {text},
            attempt {int},
            url {text},
            user_agent {text},
            machine {bool},
            tags {json},
            metadata {json},
            raw {document} NOT NULL,
            received_at_us {bigint} NOT NULL
"""

_V6_PARTITIONED_EVENTS = Migration(
    6,
    "events partitioned by month on PostgreSQL, event ids unique in their own table",
    (),
    per_dialect={
        "sqlite": ("CREATE INDEX events_by_received ON events (received_at_us)",),
        "postgresql": (
            # The events so far become the first partition, attached as they are: no row is
            # rewritten, the indexes that match the new table's are adopted, and a CHECK
            # constraint proven first spares the attach its validating scan.
            "ALTER TABLE events RENAME TO events_legacy",
            "ALTER INDEX events_by_tracking_id RENAME TO events_legacy_by_tracking_id",
            "ALTER INDEX events_waiting RENAME TO events_legacy_waiting",
            "ALTER INDEX events_bounces RENAME TO events_legacy_bounces",
            "ALTER INDEX events_soft_bounces RENAME TO events_legacy_soft_bounces",
            "ALTER INDEX events_by_provider RENAME TO events_legacy_by_provider",
            """
            CREATE TABLE event_ids (
                event_id {key} PRIMARY KEY,
                received_at_us {bigint} NOT NULL
            )
            """,
            "CREATE INDEX event_ids_by_received ON event_ids (received_at_us)",
            # The ids a provider may still retry: bounded, whatever the table holds.
            """
            INSERT INTO event_ids (event_id, received_at_us)
            SELECT event_id, received_at_us FROM events_legacy
            WHERE received_at_us >= (extract(epoch FROM now()) - 35 * 86400)::bigint * 1000000
            """,
            f"CREATE TABLE events ({_EVENT_COLUMNS_DDL}) PARTITION BY RANGE (received_at_us)",
            "CREATE INDEX events_by_tracking_id ON events (tracking_id)",
            """
            CREATE INDEX events_waiting ON events (provider, message_key, recipient_key)
            WHERE tracking_id IS NULL
            """,
            "CREATE INDEX events_bounces ON events (timestamp_us) WHERE type = 'bounced'",
            "CREATE INDEX events_by_received ON events (received_at_us)",
            """
            CREATE INDEX events_soft_bounces ON events (recipient_key, timestamp_us)
            WHERE (type = 'bounced' AND bounce = 'soft') OR type = 'delivered'
            """,
            "CREATE INDEX events_by_provider ON events (provider, received_at_us)",
            """
            DO $$
            DECLARE bound bigint := (extract(epoch FROM
                date_trunc('month', now() AT TIME ZONE 'UTC') + interval '1 month'))::bigint
                * 1000000;
            BEGIN
                EXECUTE format('ALTER TABLE events_legacy ADD CONSTRAINT events_legacy_bound '
                    'CHECK (received_at_us < %s)', bound);
                EXECUTE format('ALTER TABLE events ATTACH PARTITION events_legacy '
                    'FOR VALUES FROM (MINVALUE) TO (%s)', bound);
                ALTER TABLE events_legacy DROP CONSTRAINT events_legacy_bound;
            END $$
            """,
        ),
    },
)
"""On PostgreSQL the event history becomes a table partitioned by month of receipt, so that
retention drops whole partitions; the events stored so far are its first partition."""

_V7_DEFERRED_SINCE = Migration(
    7,
    "standing deferrals indexed by a column of their own",
    (
        # The deferrals waiting to expire were indexed by (decided_at_us) WHERE status =
        # 'deferred', which every badge change touches: on PostgreSQL no update of a state
        # could then be a heap-only (HOT) update, and each one wrote every index of messages
        # again. deferred_at_us changes only when a message enters or leaves a deferral.
        "ALTER TABLE messages ADD COLUMN deferred_at_us {bigint}",
        "UPDATE messages SET deferred_at_us = decided_at_us WHERE status = 'deferred'",
        "DROP INDEX messages_deferred",
        "CREATE INDEX messages_deferred ON messages (deferred_at_us) "
        "WHERE deferred_at_us IS NOT NULL",
    ),
    per_dialect={
        # Room on each page for the updated version of a row: what a HOT update needs.
        "postgresql": ("ALTER TABLE messages SET (fillfactor = 80)",),
    },
)
"""``deferred_at_us`` is ``decided_at_us`` while the badge is ``deferred``, else NULL."""

MIGRATIONS: tuple[Migration, ...] = (
    _V1,
    _V2_NONCE_DIGEST,
    _V3_SUPPRESSION_HISTORY,
    _V4_EVENTS_BY_PROVIDER,
    _V5_DELIVERABILITY,
    _V6_PARTITIONED_EVENTS,
    _V7_DEFERRED_SINCE,
)
LATEST = MIGRATIONS[-1].version

_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version {int} PRIMARY KEY,
    description {text} NOT NULL,
    applied_at_us {bigint} NOT NULL
)
"""


def migrate(
    dialect: Dialect,
    lock: Sequence[Query],
    now_us: int,
    migrations: Sequence[Migration] = MIGRATIONS,
) -> Program[int]:
    """Bring the schema up to the last of ``migrations``; returns the version now in place.

    ``lock`` are the statements that keep other processes out while this runs (the write
    transaction itself on SQLite, an advisory lock on PostgreSQL).
    """
    for step in lock:  # noqa: UP028 - ``yield from`` would send the replies into a tuple
        yield step
    yield Query(dialect.ddl(_BOOKKEEPING))
    rows = yield Query("SELECT MAX(version) FROM schema_migrations")
    current: int = rows[0][0] or 0
    known = migrations[-1].version if migrations else 0
    if current > known:
        raise StoreError(
            f"the tracking database is at schema version {current}, newer than the {known} "
            "this unimailtrack knows: upgrade unimailtrack to use it"
        )
    for migration in migrations:
        if migration.version <= current:
            continue
        for statement in migration.statements_for(dialect.name):
            yield Query(dialect.ddl(statement))
        yield Query(
            "INSERT INTO schema_migrations (version, description, applied_at_us) VALUES (?, ?, ?)",
            (migration.version, migration.description, now_us),
        )
        current = migration.version
    return current


_TABLE = re.compile(r"CREATE TABLE (\w+) \((.*)\)", re.DOTALL)
_ADDED = re.compile(r"ALTER TABLE (\w+) ADD COLUMN (\w+) \{(\w+)\}")
_COLUMN = re.compile(r"^\s*(\w+) \{(\w+)\}", re.MULTILINE)


@cache
def column_kinds(migrations: Sequence[Migration] = MIGRATIONS) -> Mapping[str, Mapping[str, str]]:
    """The kind (``key``, ``json``, ...) of every column of every table, read from the
    migrations themselves, so that a backend can type the arrays it sends rows in."""
    tables: dict[str, dict[str, str]] = {}
    for migration in migrations:
        every = [*migration.statements, *(s for g in migration.per_dialect.values() for s in g)]
        for statement in every:
            created = _TABLE.search(statement)
            if created:
                name, body = created.groups()
                tables[name] = dict(_COLUMN.findall(body))
            for table, column, kind in _ADDED.findall(statement):
                tables[table][column] = kind
    return tables
