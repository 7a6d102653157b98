"""What the end-to-end tests share: one headless Chromium for the whole session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser

from support.browser import chromium


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    # Playwright's sync API runs one instance per process: every test shares this one.
    with chromium() as browser:
        yield browser
