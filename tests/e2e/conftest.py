"""What the end-to-end tests share: one headless Chromium for the whole session, and what
went on in its tabs when a test fails."""

from __future__ import annotations

from collections.abc import Generator, Iterator

import pytest
from playwright.sync_api import Browser

from support.browser import OPENED, chromium, what_went_on


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    # Playwright's sync API runs one instance per process: every test shares this one.
    with chromium() as browser:
        yield browser


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    OPENED.clear()  # the tabs of the tests before this one


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report: pytest.TestReport = yield
    if call.when == "call" and report.failed:
        # In CI nothing else is left of a failed page: its requests, console and the logs.
        for number, tab in enumerate(OPENED, 1):
            report.sections.append((f"browser tab {number}", what_went_on(tab)))
    return report
