"""Property and mutation tests of every provider's signed webhook path into a real store, on
SQLite and on PostgreSQL: whatever a mutated fixture body holds, the answer is 200 or 400 (401
only for a Mailgun body whose signature cannot even be read), never 500 and never 503 while
the store is healthy, and every event a 200 accepted is in the store (see fuzz_webhooks.py).

A fixed seed and a bounded count here; ``make fuzz`` runs the large count.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fuzz_webhooks as F
from unimailtrack.tracking import Tracker
from unimailtrack.webhooks import WebhookReceiver

EXAMPLES = int(os.environ.get("UNIMAILTRACK_FUZZ_EXAMPLES", "25"))


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fuzz.sqlite3'}"
        return
    from tracking.tracking_support import require_postgres

    require_postgres()
    schema = f"fz_{secrets.token_hex(6)}"
    try:
        yield F._postgres_url(schema)
    finally:
        F._drop(schema)


@pytest.fixture
def quiet(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL)


@pytest.mark.parametrize("provider", F.PROVIDERS)
def test_mutated_signed_bodies_end_in_200_or_400_and_what_is_accepted_is_stored(
    provider: str, store_url: str, quiet: None
) -> None:
    target = F.TARGETS[provider]()
    with Tracker.open(store_url) as tracker:
        receiver = WebhookReceiver({provider: target.adapter}, tracker)

        @settings(
            max_examples=EXAMPLES,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(st.randoms(use_true_random=False), st.integers(0, len(target.seeds) - 1))
        def case(rng: Any, which: int) -> None:
            F.check(target, receiver, tracker, F.mutate(rng, target.seeds[which]()))

        case()


TYPES: tuple[Any, ...] = (None, True, 2**64, 1e308, "a\x00b", [], {"a": 1})
"""One value of each JSON type, given to every key."""


@pytest.mark.parametrize("provider", F.PROVIDERS)
def test_every_key_given_every_json_type_and_the_poison_values(
    provider: str, store_url: str, quiet: None
) -> None:
    """The systematic sweep over the smallest seed: each key given a value of each JSON type,
    and a rotating share of the poison values (all of them across six keys)."""
    target = F.TARGETS[provider]()
    seed = min(target.seeds, key=lambda make: len(F.key_paths(make())))
    statuses = []
    with Tracker.open(store_url) as tracker:
        receiver = WebhookReceiver({provider: target.adapter}, tracker)
        for number, path in enumerate(F.key_paths(seed())):
            for value in (*TYPES, *F.POISON[number % 6 :: 6]):
                case = F.give(seed(), path, value)
                statuses.append(F.check(target, receiver, tracker, case, count=False))
    assert 200 in statuses
    assert 400 in statuses or provider == "mailgun"
