"""Headless Chromium for the tests that open generated HTML pages (report, leaderboard)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


def chromium() -> str:
    """Debian's chromium; installed here when missing (CI runs as root with Debian's package archive)."""
    found = shutil.which("chromium")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium is not installed and cannot be installed here (needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True, timeout=600)
    subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, env=env, capture_output=True, timeout=900)
    return shutil.which("chromium") or pytest.fail("apt-get installed chromium but it is not on PATH")


def load_in_browser(browser: str, page: Path, screenshot: Path | None = None) -> tuple[str, list[str]]:
    """The page's DOM after load, and the problems the browser logged: console messages and any resource
    other than the page itself (a self-contained report loads nothing else)."""
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--enable-logging=stderr",
             "--v=1", f"--user-data-dir={page.parent / '.chromium'}"]
    url = page.resolve().as_uri()
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True)
    problems = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    problems += [line for line in dom.stderr.splitlines()
                 if ("FileURLLoader::Start" in line and url not in line) or "URLLoader::Start: http" in line]
    if screenshot is not None:
        subprocess.run([*flags[:5], f"--user-data-dir={page.parent / '.chromium'}", "--window-size=1200,3400",
                        f"--screenshot={screenshot}", url], capture_output=True, timeout=120, check=True)
    return dom.stdout, problems
