"""The dashboard's pages as HTTP sees them: what each screen shows, escaping, the 404 and 400
pages, CSRF on every form, the login session, access beyond loopback, one query per screen
part, the health checks and the OpenAPI document. The browser tests
(test_dashboard_browser.py) drive the same pages in Chromium."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from test_web_hardening import ROUTES, garbage_text
from unimailtrack import Email, EventType, Mailer, SendResult
from unimailtrack.adapters import MemoryAdapter
from unimailtrack.tracking import Tracker
from unimailtrack.tracking._tracker import open_store
from unimailtrack.web import create_app
from unimailtrack.web._dashboard import CSRF_COOKIE, SESSION_COOKIE, TIMELINE_PAGE, Sessions
from unimailtrack.web._openapi import document
from unimailtrack.webhooks import WebhookReceiver

XSS = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'
TOKEN = "dashboard-test-token"
GUESTS = {
    "Ann Archer <ann@example.com>": "opens-and-clicks",
    "Bob Brown <bob@example.org>": "bounce",
    "Cyd Chen <cyd@example.net>": "deferred",
    "Dan Diaz <dan@example.com>": "complaint",
    "Eve Evans <eve@example.com>": "delivered",
}


class CountingStore:
    """A store that counts the programs it runs and the statements they send."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.programs = 0
        self.statements = 0

    def reset(self) -> None:
        self.programs = self.statements = 0

    def _counted(self, factory: Any) -> Any:
        def program() -> Any:
            self.programs += 1
            steps = factory()
            try:
                step = steps.send(None)
                while True:
                    self.statements += 1
                    step = steps.send((yield step))
            except StopIteration as stop:
                return stop.value

        return program

    def run(self, program: Any, *, write: bool) -> Any:
        return self.inner.run(self._counted(program), write=write)

    async def arun(self, program: Any, *, write: bool) -> Any:
        return await self.inner.arun(self._counted(program), write=write)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@dataclass
class Site:
    client: TestClient
    tracker: Tracker
    store: CountingStore
    memory: MemoryAdapter
    mailer: Mailer
    bulk: SendResult

    def post(self, events: list[dict[str, Any]]) -> None:
        body, headers = self.memory.webhook(events)
        answer = self.client.post("/webhooks/memory", content=body, headers=headers)
        assert answer.status_code == 200, answer.text

    def tid(self, address: str) -> str:
        return self.bulk.for_recipient(address).tracking_id

    def csrf(self) -> str:
        """The CSRF token of a form on a freshly rendered page."""
        found = re.search(r'name="csrf" value="([0-9a-f]+)"', self.client.get("/suppressions").text)
        assert found is not None
        return found.group(1)


def _site(tmp_path: Any, **options: Any) -> Iterator[Site]:
    store = CountingStore(open_store(f"sqlite:///{tmp_path / 'dash.sqlite3'}", datetime.now(UTC)))
    memory = MemoryAdapter()
    with Tracker(store) as tracker:
        mailer = Mailer(memory, tracker=tracker)
        bulk = mailer.send(
            Email(
                sender="Events <events@example.com>",
                to=list(GUESTS),
                subject="Spring Gala",
                text="Join us",
                category="rsvp_invite",
                metadata={"event_id": "gala"},
                track_opens=True,
                track_clicks=True,
            )
        )
        app = create_app(WebhookReceiver(mailer, tracker), dashboard=True, **options)
        with TestClient(app, base_url="http://127.0.0.1:8025") as client:
            site = Site(client, tracker, store, memory, mailer, bulk)
            for guest, scenario in GUESTS.items():
                address = guest.split("<")[1].rstrip(">")
                site.post(memory.scenario(site.tid(address), scenario))
            yield site


@pytest.fixture
def site(tmp_path: Any) -> Iterator[Site]:
    yield from _site(tmp_path)


# --------------------------------------------------------------------------- the screens


def _badges(html: str) -> list[tuple[str, str, str]]:
    """(tone, status, label) of every badge on a page."""
    return re.findall(r'class="badge badge-(\w+)" data-status="(\w+)"[^>]*>([^<]+)<', html)


def test_track_emails_lists_every_send_with_its_badge(site: Site) -> None:
    page = site.client.get("/")
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    badges = set(_badges(page.text))
    assert ("green", "clicked", "clicked") in badges
    assert ("red", "bounced", "bounced") in badges
    assert ("amber", "deferred", "delayed") in badges
    assert ("red", "complained", "spam reported") in badges
    assert ("green", "delivered", "delivered") in badges
    # The reason is the tooltip and text for screen readers.
    assert re.search(r'data-status="bounced"[^>]* title="550 [^"]+"', page.text)
    assert '<span class="sr-only">: 550' in page.text
    for guest in GUESTS:
        assert guest.split("<")[1].rstrip(">") in page.text


def test_track_emails_filters_and_searches(site: Site) -> None:
    bounced = site.client.get("/", params={"status": "bounced"}).text
    assert [b[1] for b in _badges(bounced)] == ["bounced"]
    assert "bob@example.org" in bounced
    found = site.client.get("/", params={"q": "CYD@"}).text
    assert [b[1] for b in _badges(found)] == ["deferred"]
    assert _badges(site.client.get("/", params={"provider": "sendgrid"}).text) == []
    assert len(_badges(site.client.get("/", params={"category": "rsvp_invite"}).text)) == 5
    assert _badges(site.client.get("/", params={"since": "2999-01-01T00:00"}).text) == []


def test_the_report_pages_by_keyset(site: Site) -> None:
    for n in range(55):
        site.mailer.send(
            Email(sender="e@example.com", to=["lee@example.com"], subject=f"n{n}", text="x")
        )
    first = site.client.get("/").text
    assert len(_badges(first)) == 50
    older = re.search(r'href="/(\?cursor=[^"]+)" rel="next"', first)
    assert older is not None
    second = site.client.get("/" + older.group(1).replace("&amp;", "&")).text
    assert len(_badges(second)) == 10
    assert 'rel="next"' not in second


def test_tracking_shows_the_whole_timeline_and_the_metadata(site: Site) -> None:
    tid = site.tid("ann@example.com")
    page = site.client.get(f"/sends/{tid}").text
    for stage in ("processed", "delivered", "opened", "clicked"):
        assert f'<span class="event-type">{stage}</span>' in page
    assert "event_id" in page and "gala" in page
    assert f'data-badge-for="{tid}"' in page
    times = re.findall(r"<time>([^<]+)</time>", page.split("Timeline")[1])
    assert times == sorted(times)  # oldest first


def test_tracking_shows_a_long_reason_in_full(site: Site) -> None:
    tid = site.tid("eve@example.com")
    reason = "550 5.7.1 " + "very long explanation " * 60
    site.post(
        [
            {
                "event": "bounced",
                "id": "long-1",
                "recipient": "eve@example.com",
                "tracking_id": tid,
                "timestamp": datetime.now(UTC).timestamp(),
                "reason": reason,
                "bounce": "hard",
            }
        ]
    )
    assert reason.strip() in site.client.get(f"/sends/{tid}").text


def _opens(site: Site, tid: str, count: int, prefix: str = "o") -> None:
    """``count`` opens of one send, a second apart, reported in one webhook."""
    start = datetime(2026, 3, 1, tzinfo=UTC).timestamp()
    site.post(
        [
            {
                "event": "opened",
                "id": f"{prefix}-{n:04d}",
                "recipient": "eve@example.com",
                "tracking_id": tid,
                "timestamp": start + n,
            }
            for n in range(count)
        ]
    )


def test_tracking_shows_a_long_timeline_a_page_at_a_time(site: Site) -> None:
    tid = site.tid("eve@example.com")
    _opens(site, tid, TIMELINE_PAGE + 30)
    total = len(site.tracker.timeline(tid))
    page = site.client.get(f"/sends/{tid}").text
    assert f'<h2>Timeline <span class="count">{total}</span></h2>' in page
    rows = page.split('id="timeline-rows"')[1].split("</tbody>")[0]
    assert rows.count("<tr>") == TIMELINE_PAGE
    assert f'data-shown-for="timeline-rows">{TIMELINE_PAGE}</span> of {total}' in page
    more = re.search(r'href="(\?cursor=[^"]+)" data-load-more data-target="timeline-rows"', page)
    assert more is not None
    part = site.client.get(f"/sends/{tid}" + more.group(1) + "&part=rows")
    assert part.status_code == 200 and "<html" not in part.text  # rows for "Load more"
    assert part.text.count("<tr>") == total - TIMELINE_PAGE
    assert "data-load-more" not in part.text  # the last page
    times = re.findall(r"<time>([^<]+)</time>", rows + part.text)
    assert len(times) == total and times == sorted(times)  # oldest first, end to end
    alone = site.client.get(f"/sends/{tid}" + more.group(1)).text  # without the script
    assert alone.count('<span class="event-type">') == total - TIMELINE_PAGE
    assert "From the first event" in alone


def test_tracking_a_send_known_only_from_its_events_shows_the_badge_they_fold_to(
    site: Site,
) -> None:
    site.post(
        [
            {
                "event": "bounced",
                "id": "stray-1",
                "recipient": "zed@example.com",
                "tracking_id": "stray",
                "timestamp": datetime.now(UTC).timestamp(),
                "reason": "550 5.1.1 no such user",
                "bounce": "hard",
            }
        ]
    )
    page = site.client.get("/sends/stray").text
    assert 'data-badge-for="stray"' in page and 'data-status="bounced"' in page
    assert '<p class="reason" id="badge-reason">550 5.1.1 no such user</p>' in page
    assert "not recorded here" in page


def test_the_api_pages_a_timeline_with_a_total(site: Site) -> None:
    tid = site.tid("eve@example.com")
    _opens(site, tid, 45)
    whole = site.client.get(f"/api/sends/{tid}/timeline").json()
    first = site.client.get(f"/api/sends/{tid}/events", params={"limit": 20}).json()
    assert first["total"] == len(whole) and len(first["items"]) == 20
    seen = list(first["items"])
    cursor = first["next_cursor"]
    for _ in range(len(whole) // 20):  # the pages after the first, and no more
        page = site.client.get(
            f"/api/sends/{tid}/events", params={"limit": 20, "cursor": cursor}
        ).json()
        seen += page["items"]
        cursor = page["next_cursor"]
    assert cursor is None and seen == whole
    for params in ({"limit": "0"}, {"limit": "1001"}, {"cursor": "not-ours"}):
        refused = site.client.get(f"/api/sends/{tid}/events", params=params)
        assert refused.status_code == 400, params


def test_contact_pages_25_at_a_time_with_a_count_and_its_suppression(site: Site) -> None:
    for n in range(59):
        site.mailer.send(
            Email(sender="e@example.com", to=["bob@example.org"], subject=f"n{n}", text="x")
        )
    site.tracker.unsuppress("bob@example.org")  # the bounce suppressed it; sends went through
    site.tracker.suppress("bob@example.org", "550 mailbox gone")
    page = site.client.get("/contacts/bob@example.org").text
    assert '<span class="count" title="sent to this address">60</span>' in page
    assert len(_badges(page)) == 25
    assert "550 mailbox gone" in page and "Suppressed" in page
    more = re.search(r'href="(\?cursor=[^"]+)" data-load-more', page)
    assert more is not None
    part = site.client.get("/contacts/bob@example.org" + more.group(1) + "&part=rows")
    assert len(_badges(part.text)) == 25
    assert "<html" not in part.text  # rows only, for "Load more" to append
    subjects = re.compile(r'<td data-label="Subject"><a [^>]+>([^<]+)</a>')
    assert subjects.findall(page)[:2] == ["n58", "n57"]  # newest first
    assert subjects.findall(part.text)[:2] == ["n33", "n32"]  # the next 25, after n34


def test_bulk_analytics_totals_and_panel(site: Site) -> None:
    page = site.client.get(f"/bulk/{site.bulk.bulk_id}").text
    totals = dict(
        re.findall(r'<td data-label="([^"]+)">(?:<span>)?(\d+)', page.split('id="totals"')[1])
    )
    assert totals["Sent"] == "5"
    assert totals["Delivered"] == "3"
    assert totals["Opened"] == "1" and totals["Clicked"] == "1"
    assert totals["Bounced"] == "1" and totals["Spam reports"] == "1"
    by_name = site.client.get(
        f"/bulk/{site.bulk.bulk_id}", params={"sort": "name", "order": "asc"}
    ).text
    names = re.findall(r'<td data-label="Name" class="name">([^<]*)</td>', by_name)
    assert names == sorted(names) and len(names) == 5
    down = site.client.get(
        f"/bulk/{site.bulk.bulk_id}", params={"sort": "email", "order": "desc"}
    ).text
    emails = re.findall(r'<td data-label="Email" class="email"><a [^>]+>([^<]+)</a>', down)
    assert emails == sorted(emails, reverse=True)
    bounced = site.client.get(f"/bulk/{site.bulk.bulk_id}", params={"status": "bounced"}).text
    assert re.findall(r'class="name">([^<]*)<', bounced) == ["Bob Brown"]


def test_opens_and_clicks_only_for_a_send_that_asked_for_them(site: Site) -> None:
    untracked = site.mailer.send(
        Email(sender="e@example.com", to=["zed@example.com"], subject="plain", text="x")
    )
    page = site.client.get(f"/bulk/{untracked.bulk_id}").text
    assert "Opened" not in page.split('id="totals"')[1].split("</table>")[0]
    assert "did not ask for open or click tracking" in page


def test_machine_opens_are_counted_apart(site: Site) -> None:
    tid = site.tid("eve@example.com")
    site.post(
        [
            {
                "event": "opened",
                "id": "m-1",
                "recipient": "eve@example.com",
                "tracking_id": tid,
                "timestamp": datetime.now(UTC).timestamp(),
                "machine": True,
                "user_agent": "Mozilla/5.0",
            }
        ]
    )
    assert "+1 machine" in site.client.get(f"/bulk/{site.bulk.bulk_id}").text
    assert "machine open" in site.client.get(f"/sends/{tid}").text


def test_suppressions_show_every_field_of_the_model(site: Site) -> None:
    page = site.client.get("/suppressions").text
    for heading in ("Address", "Cause", "Reason", "Since", "Event", "Send", "Source"):
        assert f">{heading}</th>" in page
    assert "bob@example.org" in page and "dan@example.com" in page
    assert ">webhook<" in page


def test_alerts_show_domain_blocks(site: Site) -> None:
    for n in range(3):
        result = site.mailer.send(
            Email(sender="e@example.com", to=[f"u{n}@blocked.example"], subject="x", text="x")
        )
        site.post(
            [
                {
                    "event": "bounced",
                    "id": f"blk-{n}",
                    "recipient": f"u{n}@blocked.example",
                    "tracking_id": result.recipients[0].tracking_id,
                    "timestamp": datetime.now(UTC).timestamp(),
                    "bounce": "block",
                    "reason": "554 5.7.1 blocked for reputation",
                }
            ]
        )
    page = site.client.get("/alerts").text
    assert "blocked.example" in page and "554 5.7.1 blocked for reputation" in page
    assert "None." in site.client.get("/alerts", params={"threshold": 50}).text


# --------------------------------------------------------------------------- bad input


def test_everything_an_outsider_wrote_is_escaped(site: Site) -> None:
    tid = site.tid("eve@example.com")
    site.post(
        [
            {
                "event": "bounced",
                "id": "xss-1",
                "recipient": "eve@example.com",
                "tracking_id": tid,
                "timestamp": datetime.now(UTC).timestamp(),
                "reason": XSS,
                "bounce": "hard",
                "user_agent": XSS,
                "url": "javascript:alert(1)",
                "metadata": {"k": XSS},
            }
        ]
    )
    for path in (
        "/",
        f"/sends/{tid}",
        "/contacts/eve@example.com",
        "/suppressions",
        f"/bulk/{site.bulk.bulk_id}",
    ):
        html = site.client.get(path).text
        assert "<script>window" not in html and "<img src=x" not in html, path
        assert "&lt;script&gt;" in html, path
    assert 'href="javascript:' not in site.client.get(f"/sends/{tid}").text


def test_unknown_ids_answer_a_404_page_that_says_which(site: Site) -> None:
    for path, what in [
        ("/sends/nothing-here", "send or event"),
        ("/contacts/nobody@example.com", "contact"),
        ("/bulk/no-such-bulk", "bulk send"),
    ]:
        answer = site.client.get(path)
        assert answer.status_code == 404
        assert "text/html" in answer.headers["content-type"]
        assert f"No {what} is known under" in answer.text
        assert path.rsplit("/", 1)[1] in answer.text
    wrong = site.client.get("/suppressions/lift")
    assert wrong.status_code == 405 and "GET is not how" in wrong.text
    missing = site.client.get("/no/such/page")
    assert missing.status_code == 404 and "There is no page at" in missing.text
    assert site.client.get("/api/sends/nothing-here").headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    ("path", "params", "says"),
    [
        ("/", {"cursor": "bogus"}, "cursor"),
        ("/", {"status": "sent"}, "status must be one of"),
        ("/", {"since": "yesterday"}, "since must be an ISO 8601 time"),
        ("/bulk/x", {"sort": "colour"}, "sort must be one of"),
        ("/bulk/x", {"order": "up"}, "order must be asc or desc"),
        ("/alerts", {"threshold": "0"}, "threshold must be a whole number"),
        ("/contacts/a@example.com", {"cursor": "e30"}, "cursor"),
    ],
)
def test_a_malformed_parameter_answers_a_400_page_with_the_reason(
    site: Site, path: str, params: dict[str, str], says: str
) -> None:
    answer = site.client.get(path, params=params)
    assert answer.status_code == 400
    assert says in answer.text


def test_garbage_in_any_page_parameter_is_never_a_500(site: Site) -> None:
    pages = {
        "/": ("q", "status", "category", "provider", "since", "until", "cursor"),
        "/sends/{}": (),
        "/contacts/{}": ("cursor", "part"),
        "/bulk/{}": ("sort", "order", "status", "cursor", "part"),
        "/suppressions": ("cursor", "done", "address"),
        "/alerts": ("threshold", "hours"),
        "/login": ("next",),
    }

    @settings(
        max_examples=150,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(
        route=st.sampled_from(list(pages)),
        value=garbage_text,
        params=st.dictionaries(
            st.sampled_from(sorted({p for ps in pages.values() for p in ps})),
            garbage_text,
            max_size=4,
        ),
    )
    def check(route: str, value: str, params: dict[str, str]) -> None:
        path = route.replace("{}", quote(value, safe="") or "x")
        answer = site.client.get(path, params=params)
        assert answer.status_code in (200, 400, 404), (path, params, answer.text[-400:])

    check()


# --------------------------------------------------------------------------- forms and CSRF


def _lift(site: Site, address: str, **extra: Any) -> httpx.Response:
    return site.client.post(
        "/suppressions/lift",
        data={"address": address, **extra.pop("data", {})},
        follow_redirects=False,
        **extra,
    )


def test_a_form_without_a_valid_csrf_token_changes_nothing(site: Site) -> None:
    site.client.get("/")  # the browser has its CSRF cookie
    assert _lift(site, "bob@example.org").status_code == 403
    assert _lift(site, "bob@example.org", data={"csrf": "0" * 64}).status_code == 403
    token = site.csrf()
    for origin in ("https://evil.example", "null", "http://127.0.0.1:8025.evil.example"):
        cross = _lift(site, "bob@example.org", data={"csrf": token}, headers={"origin": origin})
        assert cross.status_code == 403, origin
    # Another browser's token does not fit this browser's cookie.
    site.client.cookies.clear()
    site.client.cookies.set(CSRF_COOKIE, "x" * 43)
    assert _lift(site, "bob@example.org", data={"csrf": token}).status_code == 403
    assert site.tracker.suppression("bob@example.org") is not None


def test_lifting_and_correcting_through_the_forms(site: Site) -> None:
    token = site.csrf()
    # The browser's Origin names this host (a proxy ending TLS changes only the scheme).
    lifted = _lift(
        site, "bob@example.org", data={"csrf": token}, headers={"origin": "https://127.0.0.1:8025"}
    )
    assert lifted.status_code == 303
    assert site.tracker.suppression("bob@example.org") is None
    page = site.client.get(lifted.headers["location"]).text
    assert "Lifted the suppression of bob@example.org." in page
    corrected = site.client.post(
        "/suppressions/correct",
        data={"csrf": token, "address": "dan@example.com", "new": "dan.diaz@example.com"},
        follow_redirects=False,
    )
    assert corrected.status_code == 303
    assert site.tracker.suppression("dan@example.com") is None
    bad = site.client.post(
        "/suppressions/correct",
        data={"csrf": token, "address": "ann@example.com", "new": "not an address"},
    )
    assert bad.status_code == 400 and "invalid e-mail address" in bad.text


# --------------------------------------------------------------------------- access


@pytest.fixture
def guarded(tmp_path: Any) -> Iterator[Site]:
    yield from _site(tmp_path, api_token=TOKEN)


def test_with_a_token_a_page_asks_for_the_login_form(guarded: Site) -> None:
    client = guarded.client
    first = client.get("/bulk/x?sort=name", follow_redirects=False)
    assert first.status_code == 303
    assert first.headers["location"] == "/login?next=%2Fbulk%2Fx%3Fsort%3Dname"
    assert client.get("/api/suppressions").status_code == 401
    login = client.get(first.headers["location"])
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', login.text)
    assert csrf is not None
    wrong = client.post("/login?next=/suppressions", data={"csrf": csrf.group(1), "token": "no"})
    assert wrong.status_code == 401 and SESSION_COOKIE not in client.cookies
    right = client.post(
        "/login?next=/suppressions",
        data={"csrf": csrf.group(1), "token": TOKEN},
        follow_redirects=False,
    )
    assert right.status_code == 303 and right.headers["location"] == "/suppressions"
    assert "httponly" in right.headers["set-cookie"].lower()
    assert "samesite=strict" in right.headers["set-cookie"].lower()
    assert client.get("/suppressions").status_code == 200
    assert client.get("/api/suppressions").status_code == 200  # the live stream's way in


def test_a_bearer_token_opens_the_pages_too(guarded: Site) -> None:
    answer = guarded.client.get("/", headers={"authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200


def test_forged_and_expired_sessions_are_refused(guarded: Site) -> None:
    sessions = Sessions(TOKEN)
    for cookie in (
        Sessions("another-token").issue(),
        sessions.issue(now=datetime.now(UTC).timestamp() - 13 * 3600),
        sessions.issue() + "0",
        "1.2",
    ):
        guarded.client.cookies.clear()
        guarded.client.cookies.set(SESSION_COOKIE, cookie)
        assert guarded.client.get("/", follow_redirects=False).status_code == 303
    guarded.client.cookies.clear()
    guarded.client.cookies.set(SESSION_COOKIE, sessions.issue())
    assert guarded.client.get("/", follow_redirects=False).status_code == 200


def test_login_never_sends_the_browser_to_another_site(guarded: Site) -> None:
    page = guarded.client.get("/login").text
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert csrf is not None
    for target in ("//evil.example/x", "https://evil.example", "/\\evil.example"):
        answer = guarded.client.post(
            f"/login?next={quote(target, safe='')}",
            data={"csrf": csrf.group(1), "token": TOKEN},
            follow_redirects=False,
        )
        assert answer.headers["location"] == "/", target


def _asgi_get(app: Any, base: str, path: str) -> httpx.Response:
    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=base) as client:
            return await client.get(path)

    return asyncio.run(get())


def test_without_a_token_the_pages_answer_only_on_loopback(site: Site) -> None:
    app = site.client.app
    assert _asgi_get(app, "http://127.0.0.1:8025", "/suppressions").status_code == 200
    beyond = _asgi_get(app, "http://192.0.2.7:8025", "/suppressions")
    assert beyond.status_code == 403 and "text/html" in beyond.headers["content-type"]
    assert "--api-token" in beyond.text
    assert _asgi_get(app, "http://192.0.2.7:8025", "/healthz").status_code == 200
    # A proxy on this machine in front of the app: loopback connection, forwarded request.
    for header in ("x-forwarded-for", "forwarded", "x-real-ip"):
        proxied = site.client.get("/suppressions", headers={header: "198.51.100.9"})
        assert proxied.status_code == 403, header
        assert site.client.get("/api/suppressions", headers={header: "x"}).status_code == 403
    assert site.client.get("/suppressions").status_code == 200


def test_every_answer_carries_a_policy_forbidding_inline_script(site: Site) -> None:
    for path in ("/", "/suppressions", "/no/such", "/static/dashboard.js", "/api/suppressions"):
        policy = site.client.get(path).headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy
        assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    html = site.client.get("/").text
    assert re.findall(r"<script[^>]*>", html) == ['<script src="/static/dashboard.js" defer>']
    assert " on" not in " ".join(re.findall(r"<[^>]+>", html)).replace(" one", "")


# --------------------------------------------------------------------------- cost


def test_each_screen_part_is_one_query_whatever_the_rows(site: Site) -> None:
    def cost(path: str) -> tuple[int, int]:
        site.store.reset()
        assert site.client.get(path).status_code == 200
        return site.store.programs, site.store.statements

    tid = site.tid("ann@example.com")
    before = {
        "/": cost("/"),
        "send": cost(f"/sends/{tid}"),
        "contact": cost("/contacts/bob@example.org"),
        "bulk": cost(f"/bulk/{site.bulk.bulk_id}"),
        "suppressions": cost("/suppressions"),
        "alerts": cost("/alerts"),
    }
    assert {k: v[0] for k, v in before.items()} == {
        "/": 1,
        "send": 2,
        "contact": 2,
        "bulk": 2,
        "suppressions": 1,
        "alerts": 1,
    }
    for n in range(40):
        site.mailer.send(
            Email(sender="e@example.com", to=["bob@example.org"], subject=f"{n}", text="x")
        )
        site.tracker.suppress(f"s{n}@example.com", "by hand")
    for _ in range(30):
        site.post(site.memory.scenario(tid, "opens-and-clicks"))
    after = {
        "/": cost("/"),
        "send": cost(f"/sends/{tid}"),
        "contact": cost("/contacts/bob@example.org"),
        "bulk": cost(f"/bulk/{site.bulk.bulk_id}"),
        "suppressions": cost("/suppressions"),
        "alerts": cost("/alerts"),
    }
    assert after == before


# --------------------------------------------------------------------------- health, OpenAPI


def test_healthz_and_readyz(tmp_path: Any) -> None:
    from unimailtrack import __version__

    for site in _site(tmp_path):
        assert site.client.get("/healthz").json() == {"status": "ok", "version": __version__}
        assert site.client.get("/readyz").json()["status"] == "ready"
        site.tracker.close()  # the store is gone
        answer = site.client.get("/readyz")
        assert answer.status_code == 503 and answer.headers["retry-after"] == "5"
        assert site.client.get("/healthz").status_code == 200


def test_openapi_names_every_route_and_every_parameter(site: Site) -> None:
    served = site.client.get("/openapi.json").json()
    assert served == document()
    app_paths = {
        route.path: route.methods for route in site.client.app.routes if isinstance(route, Route)
    }
    pages = {
        "/",
        "/sends/{tracking_id}",
        "/contacts/{address}",
        "/bulk/{bulk_id}",
        "/suppressions",
        "/suppressions/lift",
        "/suppressions/correct",
        "/alerts",
        "/login",
        "/logout",
    }
    api_paths = set(app_paths) - pages
    assert api_paths == set(served["paths"])
    for path, methods in app_paths.items():
        if path in api_paths:
            assert {m.lower() for m in methods} - {"head"} == set(served["paths"][path]), path
    assert not any(isinstance(r, Mount) and r.path != "/static" for r in site.client.app.routes)
    # The query parameters each API route reads are the ones it declares.
    for pattern, names in ROUTES.items():
        declared = served["paths"][re.sub(r"\{\}", _name_of(pattern), pattern)]["get"]
        query = {p["name"] for p in declared["parameters"] if p["in"] == "query"}
        assert query == set(names), pattern


def _name_of(pattern: str) -> str:
    if "/sends/" in pattern:
        return "{tracking_id}"
    if "/bulk/" in pattern:
        return "{bulk_id}"
    return "{address}"


def test_a_bulk_event_type_is_shown_by_its_canonical_name(site: Site) -> None:
    assert (
        EventType.COMPLAINED.value in site.client.get(f"/sends/{site.tid('dan@example.com')}").text
    )


# --------------------------------------------------------------------------- PostgreSQL


def test_every_screen_renders_over_postgresql() -> None:
    import secrets

    from tracking_support import POSTGRES_URL, drop_schema, require_postgres, with_schema

    require_postgres()
    schema = f"dash_{secrets.token_hex(6)}"
    memory = MemoryAdapter()
    try:
        with Tracker.open(with_schema(POSTGRES_URL, schema)) as tracker:
            mailer = Mailer(memory, tracker=tracker)
            bulk = mailer.send(
                Email(
                    sender="e@example.com", to=list(GUESTS), subject=XSS, text="x", track_opens=True
                )
            )
            app = create_app(WebhookReceiver(mailer, tracker), dashboard=True)
            with TestClient(app, base_url="http://127.0.0.1:8025") as client:
                for guest, scenario in GUESTS.items():
                    address = guest.split("<")[1].rstrip(">")
                    tid = bulk.for_recipient(address).tracking_id
                    body, headers = memory.webhook(memory.scenario(tid, scenario))
                    assert (
                        client.post("/webhooks/memory", content=body, headers=headers).status_code
                        == 200
                    )
                tid = bulk.for_recipient("bob@example.org").tracking_id
                for path in (
                    "/",
                    f"/sends/{tid}",
                    "/contacts/bob@example.org",
                    f"/bulk/{bulk.bulk_id}?sort=status&order=desc",
                    "/suppressions",
                    "/alerts",
                    "/?q=bob",
                    "/readyz",
                ):
                    answer = client.get(path)
                    assert answer.status_code == 200, (path, answer.text[-300:])
                    assert "<script>window" not in answer.text
                assert client.get("/", params={"q": "a\x00b"}).status_code == 400
                assert "bob@example.org" in client.get("/suppressions").text
    finally:
        drop_schema(schema)


def test_without_the_api_the_dashboard_keeps_only_its_change_stream(tmp_path: Any) -> None:
    with Tracker.open(f"sqlite:///{tmp_path / 'a.sqlite3'}") as tracker:
        app = create_app(
            WebhookReceiver(Mailer(MemoryAdapter(), tracker=tracker), tracker),
            api=False,
            dashboard=True,
        )
        paths = {r.path for r in app.routes if isinstance(r, Route)}
        assert "/api/changes" in paths and "/" in paths
        assert not {"/api/sends", "/api/suppressions", "/openapi.json"} & paths
        with TestClient(app, base_url="http://127.0.0.1") as client:
            assert client.get("/api/sends").status_code == 404
            assert client.get("/").status_code == 200


def test_a_contact_known_only_by_its_suppression_has_a_page(site: Site) -> None:
    site.tracker.suppress("never-sent@example.com", "asked by phone")
    page = site.client.get("/contacts/never-sent@example.com")
    assert page.status_code == 200 and "asked by phone" in page.text
    assert '<span class="count" title="sent to this address">0</span>' in page.text


def test_pages_about_one_send_or_bulk_listen_to_its_changes_only(site: Site) -> None:
    tid = site.tid("ann@example.com")
    assert f'data-changes="tracking_id={tid}"' in site.client.get(f"/sends/{tid}").text
    bulk = site.client.get(f"/bulk/{site.bulk.bulk_id}").text
    assert f'data-changes="bulk_id={site.bulk.bulk_id}"' in bulk
    assert 'data-changes=""' in site.client.get("/").text


def test_the_analytics_panel_loads_more_rows_in_pages_of_100(site: Site) -> None:
    crowd = site.mailer.send(
        Email(
            sender="e@example.com",
            to=[f"guest{n:03d}@example.com" for n in range(130)],
            subject="Crowd",
            text="x",
        )
    )
    page = site.client.get(f"/bulk/{crowd.bulk_id}", params={"sort": "email", "order": "asc"})
    emails = re.findall(r'class="email"><a [^>]+>([^<]+)</a>', page.text)
    assert len(emails) == 100 and emails[0] == "guest000@example.com"
    more = re.search(r'href="(\?[^"]+)" data-load-more data-target="panel-rows"', page.text)
    assert more is not None
    rest = site.client.get(
        f"/bulk/{crowd.bulk_id}" + more.group(1).replace("&amp;", "&") + "&part=rows"
    )
    tail = re.findall(r'class="email"><a [^>]+>([^<]+)</a>', rest.text)
    assert tail == [f"guest{n:03d}@example.com" for n in range(100, 130)]
    assert "data-load-more" not in rest.text
