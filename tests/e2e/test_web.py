"""The web dashboard in a real headless Chromium against a real `virtuai up`.

A member signs in with a token, submits a job in the form, watches it finish and
reads its logs; a job over quota is refused with the scheduler's words; a member of
another tenant sees nothing of the first; signing out ends the session.  Every page
is checked for script errors and for requests to anywhere but the server (offline).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect

from support.browser import Tab, chromium, chromium_path, open_tab, sign_in
from support.oidc_provider import Provider
from support.platform import TEST_USER_PREFIX, public_dir, remove_state
from support.server import Server

pytestmark = pytest.mark.skipif(
    chromium_path() is None, reason="needs Debian's chromium (scripts/system-packages.sh)"
)

TENANTS = ["webphys", "webbio"]
# Generous waits: on a loaded CI machine a page may take seconds; a waiting assertion
# returns as soon as it holds, so this costs nothing when things are fast.
expect.set_options(timeout=15_000)


@dataclass
class Lab:
    server: Server
    alice: str  # member of webphys
    bob: str  # member of webbio


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    tmp = tmp_path_factory.mktemp("web")
    workspaces = public_dir("vai-web-ws-")
    server = Server(
        tmp / "home",
        tmp / "config",
        {
            "VIRTUAI_WORKSPACES": str(workspaces),
            "VIRTUAI_LOCAL__CPU": "4",
            "VIRTUAI_LOCAL__MEMORY": "4Gi",
            "VIRTUAI_LOCAL__KILL_GRACE_S": "1",
            "VIRTUAI_LOCAL__USER_PREFIX": TEST_USER_PREFIX,
            "VIRTUAI_LOCAL__CGROUP_NAME": f"virtuai-web-{uuid.uuid4().hex[:6]}",
            "VIRTUAI_SCHEDULER__INTERVAL_S": "0.2",
        },
    )
    server.start()
    try:
        server.cli("tenant", "create", "webphys", "--cpu", "2", "--memory", "2Gi")
        server.cli("tenant", "create", "webbio", "--cpu", "1", "--memory", "1Gi")
        alice = server.cli("user", "create", "alice", "--tenant", "webphys").strip()
        bob = server.cli("user", "create", "bob", "--tenant", "webbio").strip()
        yield Lab(server, alice, bob)
    finally:
        if server.process and server.process.poll() is None:
            server.kill()
        remove_state(workspaces, TENANTS)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


@pytest.fixture
def tab(browser: Browser, lab: Lab) -> Iterator[Tab]:
    tab = open_tab(browser, lab.server.url)
    yield tab
    tab.close()
    assert tab.errors == [], f"script errors in the page: {tab.errors}"
    assert tab.foreign_requests == [], f"requests off the server: {tab.foreign_requests}"


def api(lab: Lab, token: str, method: str, path: str, **kwargs: object) -> httpx.Response:
    return httpx.request(
        method,
        f"{lab.server.url}/api/v1{path}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
        **kwargs,  # type: ignore[arg-type]
    )


def test_a_member_submits_a_job_watches_it_finish_and_reads_its_logs(tab: Tab, lab: Lab) -> None:
    page = tab.page
    sign_in(tab, lab.alice)
    expect(page.locator("#me")).to_contain_text("alice")
    # The session cookie: HttpOnly (scripts cannot read it) and SameSite=Strict.
    [cookie] = [c for c in tab.context.cookies() if c["name"] == "virtuai_session"]
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""

    page.click("nav a[href='#/submit']")
    page.fill("#name", "hello-web")
    page.fill("#command", "echo web-hello-$VIRTUAI_JOB_ID; sleep 1; echo web-bye >&2")
    page.fill("#cpu", "0.5")
    page.fill("#memory", "128Mi")
    page.click("#submit")
    page.wait_for_url(re.compile(r".*#/jobs/\d+$"))
    job_id = int(page.url.rsplit("/", 1)[1])

    expect(page.locator("#job-state")).to_have_text("succeeded", timeout=30_000)
    expect(page.locator("#log")).to_contain_text(f"web-hello-{job_id}")
    page.click("#log-tabs button[data-log='0:stderr']")
    expect(page.locator("#log")).to_contain_text("web-bye")
    expect(page.locator("#events")).to_contain_text("running")
    expect(page.locator("#task-runs")).to_contain_text("exited")

    # The jobs list shows it, and filters by state.
    page.click("nav a[href='#/jobs']")
    row = page.locator("#jobs-table tr", has_text="hello-web")
    expect(row).to_contain_text("succeeded")
    page.select_option("#filter-state", "failed")
    expect(page.locator("#jobs-table")).not_to_contain_text("hello-web")


def test_a_job_over_quota_is_refused_with_the_reason(tab: Tab, lab: Lab) -> None:
    page = tab.page
    sign_in(tab, lab.alice)
    page.goto("/#/submit")
    page.fill("#command", "true")
    page.fill("#cpu", "3")
    page.click("#plan")
    expect(page.locator("#plan-result")).to_contain_text("can never run")
    page.click("#submit")
    error = page.locator("#submit-result .error")
    expect(error).to_contain_text("quota of 2 cpu")
    assert re.search(r"#/submit$", page.url)


def test_a_member_of_one_tenant_sees_nothing_of_another(tab: Tab, lab: Lab) -> None:
    secret = api(
        lab,
        lab.alice,
        "POST",
        "/jobs",
        json={
            "name": "physics-secret",
            "command": ["sleep", "30"],
            "resources": {"cpu": 0.1, "memory": "32Mi"},
        },
    ).json()
    try:
        page = tab.page
        sign_in(tab, lab.bob)
        page.goto("/#/jobs")
        expect(page.locator("#jobs-table")).to_contain_text("No job matches.")
        options = page.locator("#filter-tenant option").all_inner_texts()
        assert options == ["any", "webbio"]

        page.goto(f"/#/jobs/{secret['id']}")
        expect(page.locator("#job-summary .error")).to_contain_text("not found")
        page.goto("/#/jobs?user=alice")
        expect(page.locator("#jobs-table")).to_contain_text("No job matches.")

        page.goto("/#/tenants")
        expect(page.locator("#tenants")).to_contain_text("webbio")
        page.goto("/#/usage")
        expect(page.locator("#usage-totals")).to_be_visible()
        for view in ("/#/tenants", "/#/usage", "/#/submit", "/#/vcs"):
            page.goto(view)
            page.wait_for_timeout(200)
            assert "webphys" not in page.content()
            assert "physics-secret" not in page.content()
    finally:
        api(lab, lab.alice, "POST", f"/jobs/{secret['id']}/cancel")


def test_signing_out_ends_the_session(tab: Tab, lab: Lab) -> None:
    page = tab.page
    sign_in(tab, lab.alice)
    page.click("#logout")
    expect(page.locator("#token")).to_be_visible()
    assert not [c for c in tab.context.cookies() if c["name"] == "virtuai_session"]
    status = page.evaluate("fetch('/api/v1/whoami').then(r => r.status)")
    assert status == 401
    # A wrong token says so and signs nobody in.
    page.fill("#token", "vai_" + "x" * 43)
    page.click("form button[type=submit]")
    expect(page.locator(".error")).to_contain_text("invalid token")


def test_admin_pages_and_api_docs_load_without_a_network(tab: Tab, lab: Lab) -> None:
    page = tab.page
    admin = Path(lab.server.env["XDG_CONFIG_HOME"], "virtuai", "cli.yaml").read_text()
    token = re.search(r"vai_[A-Za-z0-9_-]{43}", admin)
    assert token is not None
    sign_in(tab, token.group(0))
    page.goto("/#/admin")
    expect(page.locator("#admin-tenants")).to_contain_text("webphys")
    expect(page.locator("#admin-users")).to_contain_text("bob")
    page.goto("/#/nodes")
    expect(page.locator("main table")).to_contain_text("CPU")
    page.goto("/#/tokens")
    # Token management may not exist on this server yet: either way the page says so.
    expect(page.locator("#tokens table, #tokens-unavailable")).to_be_visible()
    page.goto("/api/v1/docs")
    expect(page.locator(".swagger-ui .title")).to_contain_text("virtuai", timeout=15_000)
    page.goto("/api/v1/redoc")
    expect(page.locator("h1")).to_contain_text("virtuai", timeout=15_000)


def test_signing_in_with_oidc_code_and_pkce(
    browser: Browser, tmp_path_factory: pytest.TempPathFactory
) -> None:
    tmp = tmp_path_factory.mktemp("web-oidc")
    with Provider(tmp / "jwks.json", client_id="virtuai-web") as provider:
        server = Server(
            tmp / "home",
            tmp / "config",
            {
                "VIRTUAI_OIDC__ISSUER": provider.issuer,
                "VIRTUAI_OIDC__AUDIENCE": "virtuai",
                "VIRTUAI_OIDC__JWKS_FILE": str(provider.jwks_file),
                "VIRTUAI_OIDC__CLIENT_ID": "virtuai-web",
                "VIRTUAI_LOCAL__CGROUP_NAME": f"virtuai-web-{uuid.uuid4().hex[:6]}",
            },
        )
        server.start()
        tab = open_tab(browser, server.url, also=(provider.issuer,))
        try:
            server.cli("tenant", "create", "webphys")
            provider.next_user = ("dora", ["virtuai:webphys:owner"])
            page = tab.page
            page.goto("/#/tenants")
            page.click("#oidc")
            # Provider -> callback -> a page that moves on by itself -> the page asked for.
            page.wait_for_selector("#logout")
            expect(page.locator("#me")).to_contain_text("dora")
            expect(page.locator("#tenants")).to_contain_text("you: owner")
            assert provider.pkce_checked == 1
            [cookie] = [c for c in tab.context.cookies() if c["name"] == "virtuai_session"]
            assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
            page.click("#logout")
            expect(page.locator("#token")).to_be_visible()
            assert page.evaluate("fetch('/api/v1/whoami').then(r => r.status)") == 401
        finally:
            tab.close()
            server.kill()
        assert tab.errors == [], tab.errors
        assert tab.foreign_requests == [], tab.foreign_requests
