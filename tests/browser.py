"""Headless Chromium from the system's packages, driven through Selenium.

Nothing downloads a browser or a driver: the driver is ``/usr/bin/chromedriver`` and the
browser ``/usr/bin/chromium`` (Debian's ``chromium`` and ``chromium-driver``), both named
explicitly, and ``SE_MANAGER_PATH`` points at no file, so that Selenium Manager fails loudly
instead of fetching anything should it ever be asked. Under ``CI`` a missing browser is a
failure, never a skip.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
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
)


def require_chromium() -> None:
    if CHROMIUM.is_file() and CHROMEDRIVER.is_file():
        return
    problem = f"{CHROMIUM} and {CHROMEDRIVER} are needed: apt-get install chromium chromium-driver"
    if os.environ.get("CI"):
        pytest.fail(f"the browser tests must run in CI, but {problem}")
    pytest.skip(f"SKIPPED BROWSER TESTS: {problem}")


def chromium(profile: Path, *, width: int = 1280, height: int = 900) -> Any:
    """A fresh headless Chromium with its own profile directory."""
    require_chromium()
    os.environ["SE_MANAGER_PATH"] = str(profile / "no-selenium-manager")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(20)
    return driver
