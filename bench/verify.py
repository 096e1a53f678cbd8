"""SendGrid webhook verification of a 1,000-event batch, against its own floor.

The floor is what no verifier can skip: one SHA-256 pass over the timestamp and the body and
one ECDSA P-256 verify, done with ``cryptography`` directly (the signature header decoded from
base64, the key loaded beforehand). ``SendGridAdapter.verify_webhook`` adds the header look-up,
the timestamp and freshness checks and the key loop. Each round times both, in rotating order,
and takes their ratio; the table shows min / median / max over the rounds.

Run with ``.venv-bench/bin/python bench/verify.py`` (``--rounds N``, default 15).
"""

from __future__ import annotations

import base64
import sys
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

sys.path.insert(0, str(Path(__file__).parent))

from _harness import inverse_target, print_table, record_targets, rounds, timed_rate
from parse_sendgrid import START, batch
from unimailtrack.adapters.sendgrid import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SendGridAdapter,
    SendGridWebhookSigner,
    load_webhook_key,
)

EVENTS = 1000
ROUNDS = 15
FLOOR = "floor: SHA-256 + ECDSA verify with cryptography"
OURS = "SendGridAdapter.verify_webhook"


def main() -> None:
    count = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else ROUNDS
    body = batch(EVENTS)
    signer = SendGridWebhookSigner()
    headers = {"Content-Type": "application/json", **signer.sign(body, timestamp=START + 60)}
    now = datetime.fromtimestamp(START + 60, UTC)
    adapter = SendGridAdapter(webhook_keys=signer.public_key)
    key = load_webhook_key(signer.public_key)
    algorithm = ec.ECDSA(hashes.SHA256())

    def floor() -> None:
        signature = base64.b64decode(headers[SIGNATURE_HEADER])
        key.verify(signature, headers[TIMESTAMP_HEADER].encode() + body, algorithm)

    adapter.verify_webhook(body, headers, now=now)  # both accept the same request
    floor()
    rows = rounds(
        {
            FLOOR: timed_rate(floor, EVENTS),
            OURS: timed_rate(lambda: adapter.verify_webhook(body, headers, now=now), EVENTS),
        },
        reference=FLOOR,
        count=count,
    )
    print_table(
        f"SendGrid verification of a {EVENTS:,}-event batch ({len(body) / 1024:,.0f} KiB), "
        f"{count} rounds",
        rows,
        reference=FLOOR,
    )
    ours = next(r for r in rows if r.label == OURS)
    record_targets(
        "verify",
        [inverse_target("SendGrid verify of a 1,000-event batch / its floor (time)", ours, 1.2)],
    )


if __name__ == "__main__":
    main()
