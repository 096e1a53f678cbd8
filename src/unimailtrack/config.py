"""Configuration from one DSN (contract): swap providers without changing code.

``UNIMAILTRACK_DSN`` holds a URL in the style Symfony Mailer made familiar::

    sendgrid://API_KEY@default?region=eu
    mailgun://API_KEY:example.com@default?region=eu
    ses://ACCESS_KEY:SECRET@default?region=eu-west-1      (or ses://default for the AWS chain)
    memory://
    failover(sendgrid://KEY@default mailgun://KEY:example.com@default)
    roundrobin(dsn1 dsn2)

Errors quote the offending part of a DSN with its secrets masked: a DSN is never echoed whole.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

from unimailtrack.errors import ConfigurationError

__all__ = ["CombinedDsn", "Dsn", "parse_dsn"]

_COMBINED = re.compile(r"^\s*(failover|roundrobin)\s*\((.*)\)\s*$", re.DOTALL)
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*$")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True, slots=True)
class Dsn:
    """One provider's DSN, parsed. ``user`` and ``password`` are URL-decoded."""

    scheme: str
    host: str = "default"
    user: str | None = None
    password: str | None = None
    port: int | None = None
    path: str = ""
    options: Mapping[str, str] = field(default_factory=dict)

    def redacted(self) -> str:
        """The DSN with its secrets masked, safe to log or show."""
        auth = ""
        if self.user is not None:
            auth = "****" + (":****" if self.password is not None else "") + "@"
        port = f":{self.port}" if self.port else ""
        query = "&".join(
            f"{k}={'****' if _secret_option(k) else v}" for k, v in self.options.items()
        )
        return f"{self.scheme}://{auth}{self.host}{port}{self.path}" + (
            f"?{query}" if query else ""
        )

    def option(self, name: str, default: str | None = None) -> str | None:
        return self.options.get(name, default)

    def int_option(self, name: str) -> int:
        value = self.options[name]
        try:
            return int(value)
        except ValueError:
            raise ConfigurationError(
                f"DSN option {name}={value!r} in {self.redacted()} must be a whole number"
            ) from None

    def float_option(self, name: str) -> float:
        value = self.options[name]
        try:
            return float(value)
        except ValueError:
            raise ConfigurationError(
                f"DSN option {name}={value!r} in {self.redacted()} must be a number"
            ) from None

    def bool_option(self, name: str) -> bool:
        value = self.options[name].lower()
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise ConfigurationError(
            f"DSN option {name}={value!r} in {self.redacted()} must be true or false"
        )

    def list_option(self, name: str) -> tuple[str, ...]:
        """A comma-separated option as a tuple (empty when absent)."""
        value = self.options.get(name, "")
        return tuple(v.strip() for v in value.split(",") if v.strip())

    def check_options(self, allowed: frozenset[str]) -> None:
        unknown = sorted(set(self.options) - allowed)
        if unknown:
            raise ConfigurationError(
                f"unknown option(s) {', '.join(unknown)} in DSN {self.redacted()}; "
                f"{self.scheme} understands: {', '.join(sorted(allowed)) or 'none'}"
            )


@dataclass(frozen=True, slots=True)
class CombinedDsn:
    """``failover(...)`` or ``roundrobin(...)`` over several DSNs."""

    strategy: str
    members: tuple[Dsn | CombinedDsn, ...]

    def redacted(self) -> str:
        return f"{self.strategy}({' '.join(m.redacted() for m in self.members)})"


def _secret_option(name: str) -> bool:
    return any(word in name for word in ("key", "secret", "token", "password"))


def _mask(text: str) -> str:
    """Mask the userinfo of a URL-ish string for an error message."""
    return re.sub(r"//[^@/\s]*@", "//****@", text)


def _split_members(inner: str) -> list[str]:
    members: list[str] = []
    depth = 0
    current: list[str] = []
    for char in inner:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char.isspace() and depth == 0:
            if current:
                members.append("".join(current))
                current = []
            continue
        current.append(char)
    if current:
        members.append("".join(current))
    return members


def parse_dsn(text: str) -> Dsn | CombinedDsn:
    """Parse a DSN; raise ``ConfigurationError`` quoting the part it cannot understand."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigurationError(
            "the DSN is empty: set UNIMAILTRACK_DSN, e.g. sendgrid://API_KEY@default or memory://"
        )
    combined = _COMBINED.match(text)
    opened = re.match(r"^\s*(failover|roundrobin)\s*\(", text)
    if opened and not combined:
        raise ConfigurationError(
            f"{_mask(text.strip())!r}: {opened.group(1)}( is not closed: write "
            f"{opened.group(1)}(dsn1 dsn2) with the ')' at the end"
        )
    if combined:
        strategy, inner = combined.groups()
        members = _split_members(inner)
        if len(members) < 2:
            raise ConfigurationError(
                f"{strategy}(...) needs at least two DSNs separated by spaces, got "
                f"{_mask(text.strip())!r}"
            )
        return CombinedDsn(strategy, tuple(parse_dsn(m) for m in members))
    return _parse_one(text.strip())


def _parse_one(text: str) -> Dsn:
    if "://" not in text:
        # Without "://" nothing tells credentials from the rest: quote only the scheme part.
        head = text.split(":", 1)[0][:20]
        raise ConfigurationError(
            f"the DSN starting {head!r} is not a DSN: expected "
            "scheme://[credentials@]host[?options], e.g. sendgrid://API_KEY@default"
        )
    scheme = text.split("://", 1)[0].lower()
    if not _SCHEME.match(scheme):
        raise ConfigurationError(
            f"the DSN scheme {scheme!r} is not valid: a DSN is scheme://..., e.g. "
            "sendgrid://API_KEY@default, or failover(dsn1 dsn2)"
        )
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ConfigurationError(f"cannot parse DSN {_mask(text)!r}: {exc}") from None
    if parts.fragment:
        raise ConfigurationError(f"a DSN has no #fragment: {_mask(text)!r}")
    options: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
        if key in options:
            raise ConfigurationError(f"DSN option {key!r} is given twice in {_mask(text)!r}")
        options[key] = value
    return Dsn(
        scheme=scheme,
        host=parts.hostname or "default",
        user=unquote(parts.username) if parts.username is not None else None,
        password=unquote(parts.password) if parts.password is not None else None,
        port=port,
        path=parts.path if parts.path not in ("", "/") else "",
        options=options,
    )
