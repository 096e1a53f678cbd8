"""``unimailtrack emulate``: run the emulator until interrupted, or for a given time, and print
what a sender and a receiver need to use it (DSNs, webhook keys, scenarios)."""

from __future__ import annotations

import argparse
import json
import threading
from typing import IO

from unimailtrack.emulator._server import PROVIDERS, Emulator, RateLimit
from unimailtrack.emulator.scenarios import SCENARIOS

__all__ = ["describe", "run"]


def describe(emulator: Emulator) -> str:
    """What the emulator serves and how to trust it, for a person to read."""
    settings = emulator.settings()
    targets = emulator.webhooks
    lines = [
        f"unimailtrack emulator: SendGrid, Mailgun, Amazon SES, Resend, Postmark and Brevo at "
        f"{emulator.url}",
        "",
        "Send through it with these DSNs (UNIMAILTRACK_DSN):",
        *(f"  {name:<9} {settings[f'{name}_dsn']}" for name in PROVIDERS),
        "",
        "Receive its webhooks with this DSN (unimailtrack serve --dsn ...):",
        f"  {settings['receiver_dsn']}",
        "",
        "Webhooks:",
        *(
            f"  {name:<9} {targets.get(name, 'recorded only (no --webhooks given)')}"
            for name in PROVIDERS
        ),
        f"  SendGrid verification key  {settings['sendgrid_webhook_key']}",
        f"  Mailgun signing key        {settings['mailgun_signing_key']}",
        f"  SES topic ARN              {settings['ses_topic_arn']}",
        f"  SNS signing certificate    {settings['ses_certificate_url']}",
        "  (the SES adapter trusts it only through trusted_certificate_urls)",
        f"  Resend signing secret      {settings['resend_webhook_secret']}",
        f"  Postmark webhook secret    {settings['postmark_webhook_secret']}",
        f"  Brevo webhook token        {settings['brevo_webhook_secret']}",
        "",
        "Scenarios, chosen by the recipient's local part (bounce@, bounce+ann@ ...):",
        *(f"  {name:<24} {scenario.summary}" for name, scenario in SCENARIOS.items()),
        "  anything else            delivered",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace, *, out: IO[str] | None = None) -> int:
    """Serve with the options of ``args`` until interrupted or ``args.duration`` passes."""
    rate_limit = RateLimit(args.rate_limit, args.rate_window) if args.rate_limit else None
    emulator = Emulator(
        port=args.port,
        webhooks=args.webhooks,
        delay=args.delay,
        duplicate=args.duplicate,
        reorder=args.reorder,
        seed=args.seed,
        rate_limit=rate_limit,
        api_key=args.api_key,
    )
    with emulator:
        text = json.dumps(emulator.settings(), indent=2) if args.json else describe(emulator)
        print(text, file=out, flush=True)
        threading.Event().wait(args.duration)
    return 0
