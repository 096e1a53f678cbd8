"""``make demo`` runs the whole story and finishes by itself."""

from __future__ import annotations

import pytest

from unimailtrack import demo


@pytest.mark.slow
def test_the_demo_tells_the_whole_story(capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main(["--delay", "0"]) == 0
    out = capsys.readouterr().out
    for name in ("SendGrid", "Mailgun", "Amazon SES", "Resend", "Postmark", "Brevo"):
        assert f"\n{name}: UNIMAILTRACK_DSN=" in out
    assert "accepted → bounced" in out  # a live transition, streamed by serve
    sections = out.split("where each recipient ended")
    assert len(sections) == 7
    mailgun_rows = sections[2].split("Amazon SES:")[0]
    assert "bounce+cyd@oldcorp.example" in mailgun_rows
    assert "suppressed since" in mailgun_rows  # the suppression list outlives a provider
    assert "oldcorp.example: 3 recipients" in out
    analytics = out.split("Bulk-send analytics")[1].splitlines()
    assert analytics[2].split()[:2] == ["SendGrid", "12"]
