from __future__ import annotations

import pytest

from unimailtrack import ConfigurationError
from unimailtrack.config import CombinedDsn, Dsn, parse_dsn


def test_single_dsns() -> None:
    dsn = parse_dsn("sendgrid://SG.secret@default?region=eu")
    assert dsn == Dsn(scheme="sendgrid", host="default", user="SG.secret", options={"region": "eu"})
    mg = parse_dsn("mailgun://key-123:mg.example.com@default?region=eu")
    assert isinstance(mg, Dsn)
    assert (mg.user, mg.password, mg.options["region"]) == ("key-123", "mg.example.com", "eu")
    ses = parse_dsn("ses://AKIA:se%2Fcret@default?region=eu-west-1")
    assert isinstance(ses, Dsn)
    assert ses.password == "se/cret"
    assert parse_dsn("memory://") == Dsn(scheme="memory")


def test_combined_dsns() -> None:
    dsn = parse_dsn("failover(sendgrid://A@default  mailgun://B:d.example@default?region=eu)")
    assert isinstance(dsn, CombinedDsn)
    assert dsn.strategy == "failover"
    assert [m.scheme for m in dsn.members if isinstance(m, Dsn)] == ["sendgrid", "mailgun"]
    assert isinstance(parse_dsn("roundrobin(memory:// memory://)"), CombinedDsn)


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ("", "empty"),
        ("sendgrid:SG.secret", "not a DSN"),
        ("failover(sendgrid://SG.secret@default)", "at least two"),
        ("sendgrid://SG.secret@default:notaport", "cannot parse"),
        ("sendgrid://SG.secret@default?region=eu&region=us", "given twice"),
    ],
)
def test_bad_dsns_quote_the_part_but_never_the_secret(text: str, quoted: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_dsn(text)
    assert quoted in str(caught.value)
    assert "SG.secret" not in str(caught.value)


def test_options_are_typed_and_checked() -> None:
    dsn = parse_dsn("memory://default?timeout=2.5&max_retries=x&verify_webhooks=no&webhook_key=S")
    assert isinstance(dsn, Dsn)
    assert dsn.float_option("timeout") == 2.5
    assert dsn.bool_option("verify_webhooks") is False
    with pytest.raises(ConfigurationError, match="whole number"):
        dsn.int_option("max_retries")
    with pytest.raises(ConfigurationError, match="unknown option") as caught:
        dsn.check_options(frozenset({"timeout"}))
    assert "webhook_key=****" in str(caught.value)
    assert "=S" not in str(caught.value)


def test_redacted_masks_credentials() -> None:
    dsn = parse_dsn("mailgun://key-123:mg.example.com@default?region=eu")
    assert isinstance(dsn, Dsn)
    assert dsn.redacted() == "mailgun://****:****@default?region=eu"
