"""``unimailtrack emulate``: run the emulator until interrupted, or for a given time, and print
what a sender and a receiver need to use it (DSNs, webhook keys, scenarios)."""

from __future__ import annotations

import argparse
import json
import threading
from pathlib import Path
from typing import IO

from unimailtrack.emulator._server import PROVIDERS, Emulator, RateLimit
from unimailtrack.emulator.scenarios import SCENARIOS
from unimailtrack.errors import ConfigurationError

__all__ = ["build", "describe", "load_keys", "run", "save_keys"]


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


def load_keys(path: Path | None) -> dict[str, str]:
    """The webhook keys kept in ``path`` by an earlier run (none when it is not there yet)."""
    if path is None or not path.exists():
        return {}
    try:
        kept = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise ConfigurationError(f"{path} is not a keys file (JSON) of the emulator") from None
    if not isinstance(kept, dict):
        raise ConfigurationError(f"{path} is not a keys file written by the emulator")
    return {k: str(kept[k]) for k in ("sendgrid_private_key", "mailgun_signing_key") if k in kept}


def save_keys(path: Path | None, emulator: Emulator) -> None:
    """Keep the emulator's SendGrid and Mailgun webhook keys in ``path`` (readable by its
    owner only), so that a receiver configured once keeps trusting it after a restart."""
    if path is None:
        return
    keys = {
        "sendgrid_private_key": emulator.sendgrid.signer.private_key_pem,
        "mailgun_signing_key": emulator.mailgun.signing_key,
    }
    path.touch(mode=0o600, exist_ok=True)
    path.write_text(json.dumps(keys, indent=2) + "\n", encoding="utf-8")


def build(args: argparse.Namespace, webhooks: str | None = None) -> Emulator:
    """The emulator the options of ``args`` describe, with the keys of ``--keys-file``."""
    rate_limit = RateLimit(args.rate_limit, args.rate_window) if args.rate_limit else None
    keys = load_keys(getattr(args, "keys_file", None))
    return Emulator(
        port=args.port if webhooks is None else getattr(args, "emulator_port", 0),
        webhooks=webhooks or args.webhooks,
        delay=args.delay,
        duplicate=args.duplicate,
        reorder=args.reorder,
        seed=args.seed,
        rate_limit=rate_limit,
        api_key=args.api_key,
        sendgrid_private_key=keys.get("sendgrid_private_key"),
        mailgun_signing_key=keys.get("mailgun_signing_key"),
    )


def run(args: argparse.Namespace, *, out: IO[str] | None = None) -> int:
    """Serve with the options of ``args`` until interrupted or ``args.duration`` passes."""
    emulator = build(args)
    with emulator:
        save_keys(getattr(args, "keys_file", None), emulator)
        text = json.dumps(emulator.settings(), indent=2) if args.json else describe(emulator)
        print(text, file=out, flush=True)
        threading.Event().wait(args.duration)
    return 0
