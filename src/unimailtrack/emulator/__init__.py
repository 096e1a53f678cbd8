"""A local stand-in for SendGrid, Mailgun, Amazon SES, Resend, Postmark and Brevo (see
docs/emulator.md).

The real adapters send to it unchanged, over real HTTP, and it answers as each provider does.
Every recipient then plays the scenario its address names (``bounce@``, ``complaint@``,
``opens-and-clicks@`` ...; anything else is delivered), and the emulator posts that provider's
own webhook events, really signed, to the URL it was given::

    with Emulator(webhooks="http://127.0.0.1:8000/webhooks/{provider}") as emulator:
        mailer = Mailer(emulator.dsn("sendgrid"))
        mailer.send(email)
        emulator.drain()

``unimailtrack emulate`` runs it from the command line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from unimailtrack.emulator._model import SentCopy
from unimailtrack.emulator._server import PROVIDERS, Delivery, Emulator, RateLimit
from unimailtrack.emulator.scenarios import (
    DEFAULT_SCENARIO,
    SCENARIOS,
    Scenario,
    SmtpReply,
    Step,
    StepKind,
    scenario_for,
)

__all__ = [
    "DEFAULT_SCENARIO",
    "PROVIDERS",
    "SCENARIOS",
    "Delivery",
    "Emulator",
    "RateLimit",
    "Scenario",
    "SentCopy",
    "SmtpReply",
    "Step",
    "StepKind",
    "emulator_fixture",
    "scenario_for",
]


def emulator_fixture(
    name: str = "emulator", *, scope: str = "function", **options: Any
) -> Callable[..., Iterator[Emulator]]:
    """A pytest fixture named ``name`` that yields a running :class:`Emulator` built with
    ``options`` and closes it afterwards. Assign it in a ``conftest.py``::

        emulator = emulator_fixture(webhooks="http://127.0.0.1:8000/webhooks/{provider}")
    """
    import pytest  # only a test suite calls this

    def fixture() -> Iterator[Emulator]:
        with Emulator(**options) as running:
            yield running

    fixture.__name__ = name
    marked: Callable[..., Iterator[Emulator]] = pytest.fixture(scope=scope, name=name)(fixture)  # type: ignore[call-overload]
    return marked
