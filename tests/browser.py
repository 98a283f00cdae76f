"""A real headless browser for the HTML view's tests: Debian's chromium driven through its
chromedriver by selenium. Nothing is downloaded: the binaries must be on PATH (``apt-get install
chromium chromium-driver``, as ``.ci/run`` does). Without them the tests skip and say why, except
where ``DLAGRAPH_REQUIRE_BROWSER=1`` (CI), where they fail."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")


def _missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    if not any(shutil.which(b) for b in CHROMIUM):
        return "no chromium on PATH (apt-get install chromium chromium-driver)"
    if not shutil.which("chromedriver"):
        return "no chromedriver on PATH (apt-get install chromium-driver)"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    why = _missing()
    if why is not None:
        if os.environ.get("DLAGRAPH_REQUIRE_BROWSER") == "1":
            pytest.fail(f"DLAGRAPH_REQUIRE_BROWSER=1 but {why}")
        pytest.skip(why)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # selenium-manager must never fetch a driver
    opts = webdriver.ChromeOptions()
    opts.binary_location = next(shutil.which(b) for b in CHROMIUM if shutil.which(b))  # type: ignore[assignment]
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,900",
        "--disable-extensions",
        "--no-first-run",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(
        options=opts, service=Service(executable_path=shutil.which("chromedriver"))
    )
    # the page's viewport 1400x900 (the window's frame takes the difference)
    w, h = driver.execute_script("return [innerWidth, innerHeight]")
    size = driver.get_window_size()
    driver.set_window_size(size["width"] + 1400 - w, size["height"] + 900 - h)
    try:
        yield driver
    finally:
        driver.quit()
