"""Open an HTML page in headless Chromium (Debian's, driven by Playwright) the way a person would.

Used by the report tests: the page loads with no console errors, every image decodes, and a
screenshot is not blank. Outside CI a machine without Chromium skips; in CI (``CI=true``) a
missing browser fails, so the check is never silently skipped there.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        msg = "Chromium not installed (scripts/install-browser.sh installs it as root)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def open_in_browser(page_path: Path, screenshot: Path) -> dict:
    """Load ``page_path``; return console errors, failed requests, image states and the shot's stats."""
    sync_api = pytest.importorskip("playwright.sync_api")
    from PIL import Image, ImageStat

    errors: list[str] = []
    failed: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("requestfailed", lambda r: failed.append(r.url))
            page.goto(Path(page_path).resolve().as_uri(), wait_until="load", timeout=60_000)
            images = page.evaluate(
                "Array.from(document.images).map(i => ({src: i.src.slice(0, 40),"
                " ok: i.complete && i.naturalWidth > 0}))"
            )
            title = page.title()
            text = page.inner_text("body")
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    with Image.open(screenshot) as im:
        stat = ImageStat.Stat(im.convert("L"))
    return {"errors": errors, "failed": failed, "images": images, "title": title, "text": text,
            "stddev": stat.stddev[0], "size": im.size}
