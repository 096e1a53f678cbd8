"""Screenshots of every dashboard screen for docs/dashboard.md, taken from the real pages.

``make screenshots`` (or ``python docs/screenshots.py``): the provider emulator and
``unimailtrack serve`` on a fresh SQLite file, the demo's invitation sent through SendGrid
(docs/emulator.md: each address picks what happens to it), then headless Chromium (the
system's ``/usr/bin/chromium`` through ``/usr/bin/chromedriver``; nothing is downloaded) opens
each screen and saves it under docs/images/. ``--keep`` leaves the site running afterwards,
to look around, until Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from unimailtrack import Email, Mailer
from unimailtrack.demo import invite, serving
from unimailtrack.emulator import Emulator
from unimailtrack.tracking import Tracker

HERE = Path(__file__).parent
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
)


def browser(profile: Path) -> Any:
    os.environ["SE_MANAGER_PATH"] = str(profile / "no-selenium-manager")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    return webdriver.Chrome(
        service=Service(executable_path="/usr/bin/chromedriver"), options=options
    )


def shoot(driver: Any, url: str, path: Path, width: int) -> None:
    """The whole page at ``width`` CSS pixels (a phone's when below 500)."""
    phone = width < 500
    metrics = {"width": width, "height": 800, "deviceScaleFactor": 1, "mobile": phone}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    driver.get(url)
    tallest = 1400 if phone else 2600
    height = min(
        int(driver.execute_script("return document.documentElement.scrollHeight")), tallest
    )
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {**metrics, "height": height})
    driver.save_screenshot(str(path))
    print(f"  {path}  <- {url}")


def populate(emulator: Emulator, tracker: Tracker) -> dict[str, str]:
    """The demo's invitation and a few reminders; returns the ids the screens need."""
    with Mailer(emulator.dsn("sendgrid"), tracker=tracker) as mailer:
        bulk = mailer.send(invite())
    emulator.drain(30)  # the bounces suppress Cyd before the reminders go out
    with Mailer(emulator.dsn("sendgrid"), tracker=tracker) as mailer:
        for n, subject in enumerate(("Your table: 12", "Parking at the venue", "See you Friday")):
            mailer.send(
                Email(
                    sender="Spring Gala <events@example.com>",
                    to=[
                        "Ann Archer <opens-and-clicks+ann@example.com>",
                        "Cyd Chen <bounce+cyd@oldcorp.example>",
                    ],
                    subject=subject,
                    text="...",
                    category=("reminder", "logistics", "reminder")[n],
                    track_opens=True,
                )
            )
    emulator.drain(30)
    assert bulk.bulk_id is not None
    bounced = next(r for r in bulk.recipients if r.recipient.startswith("bounce+cyd"))
    return {"bulk": bulk.bulk_id, "bounced": bounced.tracking_id}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=HERE / "images")
    parser.add_argument("--keep", action="store_true", help="keep serving until Ctrl-C")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="unimailtrack-shots-") as home:
        store = f"sqlite:///{Path(home) / 'tracking.sqlite3'}"
        with (
            Emulator(delay=0) as emulator,
            open(Path(home) / "serve.log", "w") as log,
            serving(emulator.receiver_dsn(), store, log) as site,
        ):
            emulator.webhooks = site + "/webhooks/{provider}"
            with Tracker.open(store) as tracker:
                ids = populate(emulator, tracker)
            driver = browser(Path(home) / "profile")
            try:
                screens = {
                    "report": "/",
                    "tracking": f"/sends/{ids['bounced']}",
                    "contact": "/contacts/bounce+cyd@oldcorp.example",
                    "analytics": f"/bulk/{ids['bulk']}?sort=name&order=asc",
                    "suppressions": "/suppressions",
                    "alerts": "/alerts",
                }
                for name, path in screens.items():
                    shoot(driver, site + path, args.out / f"dashboard-{name}.png", 1280)
                shoot(driver, site + "/", args.out / "dashboard-phone.png", 390)
            finally:
                driver.quit()
            if args.keep:
                print(f"\nThe dashboard: {site}/  (Ctrl-C to stop)")
                with contextlib.suppress(KeyboardInterrupt):
                    while True:
                        time.sleep(3600)
    return 0


if __name__ == "__main__":
    sys.exit(main())
