"""A real headless Chromium (Debian's package) driven by Playwright; no browser download."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from playwright.sync_api import Browser, BrowserContext, Page, Request, Route, sync_playwright
from playwright.sync_api import TimeoutError as PageTimeout


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@contextmanager
def chromium() -> Iterator[Browser]:
    path = chromium_path()
    assert path is not None, "chromium is not installed: run scripts/system-packages.sh"
    with sync_playwright() as playwright:
        # --no-sandbox: the tests run as root, where Chromium's sandbox refuses to start.
        browser = playwright.chromium.launch(
            executable_path=path, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Tab:
    """A page in its own browser context (own cookies), recording what went wrong in it."""

    context: BrowserContext
    page: Page
    errors: list[str] = field(default_factory=list)
    foreign_requests: list[str] = field(default_factory=list)
    server_log: Path | None = None  # shown when a step fails: what the server was doing
    # Every request the page made, with when it was sent and how it ended: a step that
    # timed out names the request it waited on.
    requests: dict[Request, tuple[float, str]] = field(default_factory=dict)
    console: list[str] = field(default_factory=list)

    def close(self) -> None:
        self.context.close()


def open_tab(
    browser: Browser, base_url: str, also: tuple[str, ...] = (), server_log: Path | None = None
) -> Tab:
    """A fresh context that may reach ``base_url`` (and the URLs in ``also``) only: any
    other request is recorded and refused, which proves the pages work offline (no CDN)."""
    context = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 860})
    context.set_default_timeout(30_000)
    page = context.new_page()
    tab = Tab(context, page, server_log=server_log)
    hosts = {urlparse(url).netloc for url in (base_url, *also)}

    def guard(route: Route) -> None:
        if urlparse(route.request.url).netloc in hosts:
            route.continue_()
        else:
            tab.foreign_requests.append(route.request.url)
            route.abort()

    context.route("**/*", guard)
    page.on("pageerror", lambda error: tab.errors.append(str(error)))
    page.on("console", lambda message: _console(tab, message.type, message.text))
    page.on("request", lambda request: _sent(tab, request))
    page.on("requestfinished", lambda request: _ended(tab, request, "answered"))
    page.on("requestfailed", lambda request: _ended(tab, request, f"failed: {request.failure}"))
    return tab


def _sent(tab: Tab, request: Request) -> None:
    tab.requests[request] = (time.monotonic(), "pending")


def _ended(tab: Tab, request: Request, how: str) -> None:
    sent, _ = tab.requests.get(request, (time.monotonic(), ""))
    tab.requests[request] = (sent, f"{how} after {time.monotonic() - sent:.1f} s")


def _console(tab: Tab, kind: str, text: str) -> None:
    if kind in ("error", "warning"):
        tab.console.append(f"{kind}: {text}")


def sign_in(tab: Tab, token: str) -> None:
    try:
        tab.page.goto("/")
        tab.page.fill("#token", token)
        tab.page.click("form button[type=submit]")
        tab.page.wait_for_selector("#logout")
    except PageTimeout as error:
        raise AssertionError(f"signing in failed: {error}\n{what_went_on(tab)}") from error


def what_went_on(tab: Tab, lines: int = 60) -> str:
    """The page as shown, and the end of the server's log: what a failed step needs to be
    understood after the fact (in CI, nothing else is left of it)."""
    try:
        shown = tab.page.inner_text("body", timeout=2_000)
    except PageTimeout:
        shown = "(the page did not answer)"
    now = time.monotonic()
    asked = "\n".join(
        f"  {request.method} {request.url}: "
        + (f"pending for {now - sent:.1f} s" if how == "pending" else how)
        for request, (sent, how) in list(tab.requests.items())[-40:]
    )
    told = ""
    if tab.server_log is not None and tab.server_log.exists():
        told = "\n".join(tab.server_log.read_text(errors="replace").splitlines()[-lines:])
    return (
        f"page at {tab.page.url}:\n{shown}\n"
        f"requests (the last 40):\n{asked}\n"
        f"console:\n" + "\n".join(tab.console[-20:]) + "\n"
        f"server log (last {lines} lines):\n{told}"
    )
