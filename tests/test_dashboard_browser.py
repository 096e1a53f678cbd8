"""The dashboard in a real browser: headless Chromium (tests/browser.py) against a real
``unimailtrack serve`` on SQLite, fed by the provider emulator's signed webhooks.

One world for the module: the emulator, ``serve`` in its own process (the dashboard on, no
token, loopback), a tracker on the same SQLite file for sending, and one browser.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from browser import chromium
from unimailtrack import Email, Mailer, SendResult
from unimailtrack.adapters import MemoryAdapter
from unimailtrack.emulator import Emulator
from unimailtrack.tracking import Tracker
from unimailtrack.web._dashboard import TIMELINE_PAGE

SECRET = "browser-test-memory-secret"
XSS = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'
GUESTS = (
    "Ann Archer <opens-and-clicks+ann@example.com>",
    "Bob Brown <bounce+bob@example.org>",
    "Cyd Chen <deferred+cyd@example.net>",
    "Dan Diaz <complaint+dan@example.com>",
    "Eve Evans <eve@example.com>",
    "Fay Fox <dropped+fay@example.org>",
)
CONTACT = "lee@example.com"


@dataclass
class World:
    url: str
    emulator: Emulator
    tracker: Tracker
    driver: Any
    bulk: SendResult
    memory: MemoryAdapter

    def open(self, path: str) -> None:
        self.driver.get(self.url + path)

    def wait(self, condition: Any, timeout: float = 10.0) -> Any:
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, timeout, poll_frequency=0.05).until(condition)

    def css(self, selector: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return list(self.driver.find_elements(By.CSS_SELECTOR, selector))

    def label(self, badge: Any) -> str:
        """What a badge says (its first text; the reason after it is for screen readers)."""
        return str(self.driver.execute_script("return arguments[0].firstChild.textContent", badge))

    def badge(self, tracking_id: str) -> Any:
        return self.css(f'[data-badge-for="{tracking_id}"]')[0]

    def wait_live(self) -> None:
        self.wait(lambda d: d.find_element("tag name", "body").get_attribute("data-live") == "on")

    def post(self, provider: str, body: bytes, headers: dict[str, str]) -> None:
        answer = httpx.post(f"{self.url}/webhooks/{provider}", content=body, headers=headers)
        assert answer.status_code == 200, answer.text

    def errors(self) -> list[str]:
        """What the browser's console reported as errors since the last call (a blocked
        inline script, a failed load)."""
        return [e["message"] for e in self.driver.get_log("browser") if e["level"] == "SEVERE"]


def _serve(dsn: str, store: str, log: Path) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-m", "unimailtrack.cli", "serve", "--port", "0"]
    command += ["--dsn", dsn, "--store", store, "--log-level", "warning"]
    with log.open("w") as err:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("unimailtrack: serving "):
        process.kill()
        raise RuntimeError(f"serve did not start: {line}{log.read_text()}")
    return process, line.split()[-1]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    home = tmp_path_factory.mktemp("browser")
    store = f"sqlite:///{home / 'tracking.sqlite3'}"
    driver = chromium(home / "profile")
    with Emulator(delay=0) as emulator:
        dsns = " ".join(emulator.dsn(p) for p in ("sendgrid", "mailgun", "ses"))
        dsn = f"failover({dsns} memory://?webhook_secret={SECRET})"
        process, url = _serve(dsn, store, home / "serve.log")
        emulator.webhooks = url + "/webhooks/{provider}"
        tracker = Tracker.open(store)
        try:
            with Mailer(emulator.dsn("sendgrid"), tracker=tracker) as mailer:
                bulk = mailer.send(
                    Email(
                        sender="Spring Gala <events@example.com>",
                        to=list(GUESTS),
                        subject="You're invited: Spring Gala",
                        text="Join us on 21 March.",
                        category="rsvp_invite",
                        track_opens=True,
                        track_clicks=True,
                    )
                )
                for n in range(60):
                    mailer.send(
                        Email(
                            sender="events@example.com",
                            to=[f"Lee Lam <{CONTACT}>"],
                            subject=f"Reminder {n + 1:02d}",
                            text="See you there.",
                            category="reminder",
                        )
                    )
            emulator.drain(30)
            yield World(url, emulator, tracker, driver, bulk, MemoryAdapter(webhook_secret=SECRET))
        finally:
            driver.quit()
            tracker.close()
            process.terminate()
            process.wait(15)
            if process.stdout is not None:
                process.stdout.close()
            assert "Traceback" not in (home / "serve.log").read_text()


def _address(guest: str) -> str:
    return guest.split("<")[1].rstrip(">")


# --------------------------------------------------------------------------- the report


def test_the_report_shows_every_send_with_its_coloured_badge(world: World) -> None:
    world.errors()
    world.open("/?category=rsvp_invite")
    badges = {
        b.find_element("xpath", "ancestor::tr")
        .find_element("css selector", "td[data-label='Recipient'] a")
        .text: b
        for b in world.css("[data-badge-for]")
    }
    assert set(badges) == {_address(g) for g in GUESTS}
    colours = {
        "green": "rgba(218, 251, 225, 1)",
        "red": "rgba(255, 235, 233, 1)",
        "amber": "rgba(255, 241, 194, 1)",
    }
    expected = {
        "opens-and-clicks+ann@example.com": ("clicked", "green"),
        "bounce+bob@example.org": ("bounced", "red"),
        "deferred+cyd@example.net": ("delayed", "amber"),
        "complaint+dan@example.com": ("spam reported", "red"),
        "eve@example.com": ("delivered", "green"),
        "dropped+fay@example.org": ("dropped", "red"),
    }
    for address, (label, tone) in expected.items():
        badge = badges[address]
        assert world.label(badge) == label, address
        assert badge.value_of_css_property("background-color") == colours[tone], address
    bounce = badges["bounce+bob@example.org"]
    assert bounce.get_attribute("title").startswith("550 5.1.1")
    spoken = bounce.find_element("css selector", ".sr-only").get_attribute("textContent")
    assert spoken.startswith(": 550 5.1.1")
    assert world.errors() == []  # nothing blocked by the policy, nothing failed to load


def test_a_badge_changes_on_an_open_page_without_a_reload(world: World) -> None:
    world.emulator.webhooks = None  # keep this send's webhooks, to post them by hand
    try:
        before = len(world.emulator.deliveries)
        with Mailer(world.emulator.dsn("sendgrid"), tracker=world.tracker) as mailer:
            result = mailer.send(
                Email(
                    sender="events@example.com", to=["live@example.com"], subject="Live", text="x"
                )
            )
        world.emulator.drain(30)
        held = world.emulator.deliveries[before:]
    finally:
        world.emulator.webhooks = world.url + "/webhooks/{provider}"
    tid = result.recipients[0].tracking_id
    world.open("/?q=live%40example.com")
    world.wait_live()
    assert world.label(world.badge(tid)) == "sent"
    world.driver.execute_script("window.__still_here = 42")
    posted = time.monotonic()
    for delivery in held:
        world.post(delivery.provider, delivery.body, dict(delivery.headers))
    world.wait(lambda d: world.label(world.badge(tid)) == "delivered", 5)
    took = time.monotonic() - posted
    assert world.driver.execute_script("return window.__still_here") == 42  # no reload
    badge = world.badge(tid)
    assert "badge-green" in badge.get_attribute("class")
    assert badge.get_attribute("title") == "250 2.0.0 OK"
    assert took < 3.0, took


# --------------------------------------------------------------------------- the contact


def test_load_more_appends_25_then_the_rest_in_place(world: World) -> None:
    world.open(f"/contacts/{CONTACT}")
    rows = "#history-rows tr"
    assert len(world.css(rows)) == 25
    assert world.css("h1 .count")[0].text == "60"
    world.driver.execute_script("window.__still_here = 7")
    first_subject = world.css(f"{rows} td[data-label='Subject']")[0].text
    assert first_subject == "Reminder 60"  # newest first
    world.css("a[data-load-more]")[0].click()
    world.wait(lambda d: len(world.css(rows)) == 50)
    world.css("a[data-load-more]")[0].click()
    world.wait(lambda d: len(world.css(rows)) == 60)
    assert world.css("a[data-load-more]") == []
    assert world.css("[data-shown-for='history-rows']")[0].text == "60"
    subjects = [c.text for c in world.css(f"{rows} td[data-label='Subject']")]
    assert subjects == [f"Reminder {n:02d}" for n in range(60, 0, -1)]
    assert world.driver.execute_script("return window.__still_here") == 7


def test_load_more_on_a_long_timeline_appends_the_rest_in_place(world: World) -> None:
    tid = world.bulk.for_recipient("eve@example.com").tracking_id
    start = datetime(2026, 3, 1, tzinfo=UTC).timestamp()
    opens = [
        {
            "event": "opened",
            "id": f"reread-{n:04d}",
            "recipient": "eve@example.com",
            "tracking_id": tid,
            "timestamp": start + n,
        }
        for n in range(TIMELINE_PAGE + 20)
    ]
    world.post("memory", *world.memory.webhook(opens))
    total = len(world.tracker.timeline(tid))
    world.open(f"/sends/{tid}")
    rows = "#timeline-rows tr"
    assert len(world.css(rows)) == TIMELINE_PAGE
    world.driver.execute_script("window.__still_here = 9")
    world.css("a[data-load-more]")[0].click()
    world.wait(lambda d: len(world.css(rows)) == total)
    assert world.css("a[data-load-more]") == []
    assert world.css("[data-shown-for='timeline-rows']")[0].text == str(total)
    times = [c.text for c in world.css(f"{rows} time")]
    assert times == sorted(times)
    assert world.driver.execute_script("return window.__still_here") == 9


# --------------------------------------------------------------------------- analytics


def test_the_analytics_panel_sorts_and_filters(world: World) -> None:
    world.open(f"/bulk/{world.bulk.bulk_id}")
    totals = {c.get_attribute("data-label"): c.text for c in world.css("#totals td")}
    assert totals["Sent"] == "6" and totals["Bounced"] == "1" and totals["Dropped"] == "1"

    def column(label: str) -> list[str]:
        return [c.text for c in world.css(f"#panel-rows td[data-label='{label}']")]

    world.css("a[data-sort='name']")[0].click()
    world.wait(lambda d: "sort=name" in d.current_url)
    assert column("Name") == sorted(column("Name")) and len(column("Name")) == 6
    world.css("a[data-sort='name']")[0].click()
    world.wait(lambda d: "order=desc" in d.current_url)
    assert column("Name") == sorted(column("Name"), reverse=True)
    world.css("a[data-sort='email']")[0].click()
    world.wait(lambda d: "sort=email" in d.current_url)
    assert column("Email") == sorted(column("Email"))

    from selenium.webdriver.support.ui import Select

    Select(world.css("#panel-status")[0]).select_by_value("bounced")  # applies when chosen
    world.wait(lambda d: "status=bounced" in d.current_url)
    assert column("Name") == ["Bob Brown"]
    assert "sort=email" in world.driver.current_url  # the sort is kept


# --------------------------------------------------------------------------- suppressions


def test_a_suppression_is_lifted_through_the_form(world: World) -> None:
    address = "bounce+bob@example.org"
    assert world.tracker.suppression(address) is not None
    world.open("/suppressions")
    row = world.css(f'tr[data-address="{address}"]')
    assert row, "the bounced address is on the list"
    row[0].find_element("css selector", "form.lift button").click()
    try:
        world.wait(lambda d: "done=lifted" in d.current_url)
    except Exception:
        print(world.driver.current_url, world.driver.page_source[-1500:], world.errors())
        raise
    assert f"Lifted the suppression of {address}." in world.css(".notice")[0].text
    assert world.css(f'tr[data-address="{address}"]') == []
    assert world.tracker.suppression(address) is None


# --------------------------------------------------------------------------- hostile text


def test_a_hostile_reason_shows_as_text_and_runs_nothing(world: World) -> None:
    with Mailer(world.memory, tracker=world.tracker) as mailer:
        result = mailer.send(
            Email(
                sender="events@example.com",
                to=["xss@example.com"],
                subject=XSS,
                text="x",
                metadata={"note": XSS},
            )
        )
    tid = result.recipients[0].tracking_id
    now = datetime.now(UTC).timestamp()
    body, headers = world.memory.webhook(
        [
            {
                "event": "bounced",
                "id": "xss-1",
                "recipient": "xss@example.com",
                "tracking_id": tid,
                "timestamp": now,
                "reason": XSS,
                "bounce": "hard",
                "user_agent": XSS,
                "url": "javascript:window.__xss=3",
            }
        ]
    )
    world.post("memory", body, headers)
    world.errors()
    for path in (f"/sends/{tid}", "/contacts/xss@example.com", "/?q=xss", "/suppressions"):
        world.open(path)
        assert world.driver.execute_script("return window.__xss === undefined"), path
        assert world.css("img") == [], path
        assert XSS in world.driver.find_element("tag name", "body").text, path
    world.open(f"/sends/{tid}")
    assert world.css(".timeline .reason")[0].text == XSS
    assert not any(
        (a.get_attribute("href") or "").startswith("javascript:") for a in world.css("a")
    )
    # The same text arriving live: painted as text too.
    world.open("/contacts/xss@example.com")
    world.wait_live()
    live = XSS.replace("__xss = ", "__xss = 4 + ")
    body, headers = world.memory.webhook(
        [
            {
                "event": "complained",
                "id": "xss-2",
                "recipient": "xss@example.com",
                "tracking_id": tid,
                "timestamp": now + 1,
                "reason": live,
            }
        ]
    )
    world.post("memory", body, headers)
    world.wait(lambda d: world.css(f'[data-badge-for="{tid}"]')[0].get_attribute("title") == live)
    assert world.driver.execute_script("return window.__xss === undefined")
    assert world.css("img") == []
    assert world.errors() == []


# --------------------------------------------------------------------------- a phone


def test_every_screen_fits_a_phone(world: World, tmp_path: Path) -> None:
    metrics = {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True}
    world.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    try:
        tid = world.bulk.recipients[1].tracking_id
        for path in (
            "/",
            f"/sends/{tid}",
            f"/contacts/{CONTACT}",
            f"/bulk/{world.bulk.bulk_id}",
            "/suppressions",
            "/alerts",
        ):
            world.open(path)
            overflow = world.driver.execute_script(
                "return document.documentElement.scrollWidth - window.innerWidth"
            )
            assert overflow <= 0, (path, overflow)
            assert world.driver.execute_script("return window.innerWidth") == 390
    finally:
        world.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_the_browser_is_the_system_chromium(world: World) -> None:
    capabilities = world.driver.capabilities
    assert capabilities["browserName"] in ("chrome", "chromium")
    version = subprocess.run(
        ["/usr/bin/chromium", "--version"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "HOME": "/tmp"},
    ).stdout
    assert capabilities["browserVersion"].split(".")[0] in version
    assert json.dumps(capabilities).count("chromedriverVersion") == 1
