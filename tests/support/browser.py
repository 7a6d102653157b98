"""A real headless Chromium (Debian's package) driven by Playwright; no browser download."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from playwright.sync_api import Browser, BrowserContext, Page, Request, sync_playwright
from playwright.sync_api import Error as PageError
from playwright.sync_api import TimeoutError as PageTimeout


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@contextmanager
def chromium() -> Iterator[Browser]:
    path = chromium_path()
    assert path is not None, "chromium is not installed: run scripts/system-packages.sh"
    with sync_playwright() as playwright:
        # --no-sandbox: the tests run as root, where Chromium's sandbox refuses to start.
        # No host but this one resolves: a page that reaches for a CDN fails as it would
        # offline (the servers under test, and the tests' OIDC provider, are 127.0.0.1).
        browser = playwright.chromium.launch(
            executable_path=path,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            ],
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
    hosts: frozenset[str]  # host:port the pages may reach
    errors: list[str] = field(default_factory=list)
    server_log: Path | None = None  # shown when a step fails: what the server was doing
    # Every request the page made, with when it was sent and how it ended: a step that
    # timed out names the request it waited on.
    requests: dict[Request, tuple[float, str]] = field(default_factory=dict)
    console: list[str] = field(default_factory=list)

    @property
    def foreign_requests(self) -> list[str]:
        """Requests for another host, even those the page's Content-Security-Policy stops
        (the console reports each one: the vendored ReDoc had asked for its logo)."""
        return [
            request.url
            for request in self.requests
            if urlparse(request.url).scheme in ("http", "https", "ws", "wss")
            and urlparse(request.url).netloc not in self.hosts
        ]

    def close(self) -> None:
        self.context.close()


# The tabs opened by the test running now: a test that fails reports what went on in each
# (tests/e2e/conftest.py), whichever step failed.
OPENED: list[Tab] = []


def open_tab(
    browser: Browser, base_url: str, also: tuple[str, ...] = (), server_log: Path | None = None
) -> Tab:
    """A fresh context whose requests to anywhere but ``base_url`` (and the URLs in
    ``also``) are recorded: with the browser's resolver refusing every name, that proves
    the pages work offline (no CDN).

    Recorded from the request events, not by routing every request through a handler:
    a routed request waits until this process answers it, one more thing that may stall
    a page under load."""
    context = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 860})
    context.set_default_timeout(30_000)
    page = context.new_page()
    hosts = frozenset(urlparse(url).netloc for url in (base_url, *also))
    tab = Tab(context, page, hosts, server_log=server_log)
    OPENED.append(tab)
    context.on("request", lambda request: _sent(tab, request))
    context.on("requestfinished", lambda request: _ended(tab, request, "answered"))
    context.on("requestfailed", lambda request: _ended(tab, request, f"failed: {request.failure}"))
    page.on("pageerror", lambda error: tab.errors.append(str(error)))
    page.on("console", lambda message: _console(tab, message.type, message.text))
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
    tab.page.goto("/")
    tab.page.fill("#token", token)
    tab.page.click("form button[type=submit]")
    tab.page.wait_for_selector("#logout")


def what_went_on(tab: Tab, lines: int = 60) -> str:
    """The page as shown, its requests and console, and the ends of the server's and
    nginx's logs: what a failed step needs to be understood after the fact (in CI,
    nothing else is left of it)."""
    try:
        shown = tab.page.inner_text("body", timeout=2_000)
    except PageTimeout:
        shown = "(the page did not answer)"
    except PageError:
        shown = "(the page is closed)"
    now = time.monotonic()
    asked = "\n".join(
        f"  {request.method} {request.url}: "
        + (f"pending for {now - sent:.1f} s" if how == "pending" else how)
        for request, (sent, how) in list(tab.requests.items())[-40:]
    )
    told = nginx = ""
    if tab.server_log is not None and tab.server_log.exists():
        told = "\n".join(tab.server_log.read_text(errors="replace").splitlines()[-lines:])
        errors = tab.server_log.parent / "nginx" / "error.log"  # proxy/nginx.py
        if errors.exists():
            nginx = "\n".join(errors.read_text(errors="replace").splitlines()[-20:])
    return (
        f"page at {tab.page.url}:\n{shown}\n"
        f"requests (the last 40):\n{asked}\n"
        f"console:\n" + "\n".join(tab.console[-20:]) + "\n"
        f"server log (last {lines} lines):\n{told}\n"
        f"nginx's error log (last 20 lines):\n{nginx or '(none)'}"
    )
