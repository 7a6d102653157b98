"""The web dashboard in a real headless Chromium against a real `virtuai up`.

A member signs in with a token, submits a job in the form, watches it finish and
reads its logs; a job over quota is refused with the scheduler's words; a member of
another tenant sees nothing of the first; signing out ends the session.  Every page
is checked for script errors and for requests to anywhere but the server (offline).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page, Route, expect
from test_e2e_notebooks import public_jupyter

from support.browser import Tab, chromium_path, open_tab, sign_in
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


EXAMPLE_MODEL = Path(__file__).parents[2] / "examples" / "services" / "iris" / "model.py"


@dataclass
class Lab:
    server: Server
    alice: str  # member of webphys
    bob: str  # member of webbio
    model: Path  # the example service's model, where tenant users can read it
    jupyter: Path | None  # a Python with JupyterLab for notebooks (None: none here)


def _jupyter(directory: Path) -> Path | None:
    """The notebooks' Python, as tests/e2e/test_e2e_notebooks.py makes it (this venv's
    JupyterLab, nothing installed); None where notebooks cannot run (not root)."""
    if os.geteuid() != 0:
        return None
    try:
        return public_jupyter(directory / "venv")
    except pytest.skip.Exception:
        return None


def _stop_workloads(lab: Lab) -> None:
    """Whatever the tests left running is stopped before the server goes (its tasks
    would outlive it otherwise)."""
    for token, path in (
        (lab.alice, "/notebooks/weblab"),
        (lab.alice, "/services/iris"),
        (lab.bob, "/notebooks/idle"),
    ):
        api(lab, token, "DELETE", path)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        live = [
            j
            for token in (lab.alice, lab.bob)
            for j in api(lab, token, "GET", "/jobs").json()
            if j["state"] in ("pending", "admitted", "starting", "running", "preempting")
        ]
        if not live:
            return
        time.sleep(0.3)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    tmp = tmp_path_factory.mktemp("web")
    workspaces = public_dir("vai-web-ws-")
    shared = public_dir("vai-web-files-")
    shutil.copy(EXAMPLE_MODEL, shared / "model.py")
    (shared / "model.py").chmod(0o644)
    jupyter = _jupyter(shared)
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
            "VIRTUAI_SERVICES__RECONCILE_INTERVAL_S": "0.2",
            "VIRTUAI_NOTEBOOKS__CULL_INTERVAL_S": "0.5",
            **({"VIRTUAI_NOTEBOOKS__PYTHON": str(jupyter)} if jupyter else {}),
        },
    )
    server.start()
    lab = None
    try:
        server.cli("tenant", "create", "webphys", "--cpu", "2", "--memory", "2Gi")
        server.cli("tenant", "create", "webbio", "--cpu", "1", "--memory", "1Gi")
        alice = server.cli("user", "create", "alice", "--tenant", "webphys").strip()
        bob = server.cli("user", "create", "bob", "--tenant", "webbio").strip()
        lab = Lab(server, alice, bob, shared / "model.py", jupyter)
        yield lab
    finally:
        if server.process and server.process.poll() is None:
            if lab is not None:
                _stop_workloads(lab)
            server.kill()
        remove_state(workspaces, TENANTS)
        shutil.rmtree(shared, ignore_errors=True)


@pytest.fixture
def tab(browser: Browser, lab: Lab) -> Iterator[Tab]:
    tab = open_tab(browser, lab.server.url, server_log=lab.server.log)
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
        # The tenant filter is filled by its own request: wait for it, then it lists
        # only the caller's tenant.
        expect(page.locator("#filter-tenant option")).to_have_text(["any", "webbio"])

        page.goto(f"/#/jobs/{secret['id']}")
        expect(page.locator("#job-summary .error")).to_contain_text("not found")
        page.goto("/#/jobs?user=alice")
        expect(page.locator("#jobs-table")).to_contain_text("No job matches.")

        page.goto("/#/tenants")
        expect(page.locator("#tenants")).to_contain_text("webbio")
        page.goto("/#/usage")
        expect(page.locator("#usage-totals")).to_be_visible()
        for view in (
            "/#/tenants",
            "/#/usage",
            "/#/submit",
            "/#/vcs",
            "/#/notebooks",
            "/#/services",
        ):
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


def test_a_server_that_does_not_answer_still_leaves_a_way_to_sign_in(tab: Tab, lab: Lab) -> None:
    """The page's first question (who am I?) fails as it would while the server restarts
    or is overloaded: the sign-in form is shown with what went wrong, not a dead page."""
    page = tab.page
    page.route("**/api/v1/whoami", lambda route: route.fulfill(status=503, body="{}"))
    page.goto("/")
    expect(page.locator(".notice")).to_contain_text("The server did not answer")
    page.unroute("**/api/v1/whoami")
    page.fill("#token", lab.alice)
    page.click("form button[type=submit]")
    expect(page.locator("#logout")).to_be_visible()


def test_a_read_that_gets_no_answer_is_asked_again(tab: Tab, lab: Lab) -> None:
    """A connection that died silently (no answer, no error) costs one timeout, not a
    page that waits forever: the first /whoami is never answered, the second is."""
    page = tab.page
    unanswered: list[Route] = []

    def first_never_answered(route: Route) -> None:
        if unanswered:
            route.continue_()
        else:
            unanswered.append(route)  # left pending: the request hangs

    page.route("**/api/v1/whoami", first_never_answered)
    page.goto("/")
    page.wait_for_selector("#token", timeout=25_000)  # the retry's 401: the sign-in form
    assert len(unanswered) == 1
    page.unroute("**/api/v1/whoami")


def test_a_script_that_failed_to_load_is_fetched_again(tab: Tab, lab: Lab) -> None:
    """One of the dashboard's modules fails to come, as every request in flight does when
    the client's network changes (Chromium: ERR_NETWORK_CHANGED): the page loads itself
    again instead of staying at "Loading…"."""
    page = tab.page
    failed: list[str] = []

    def fail_once(route: Route) -> None:
        if failed:
            route.continue_()
        else:
            failed.append(route.request.url)
            route.abort("connectionreset")

    page.route("**/static/js/pages/usage.js", fail_once)
    page.goto("/")
    expect(page.locator("#token")).to_be_visible()
    assert len(failed) == 1
    page.unroute("**/static/js/pages/usage.js")


def test_a_dashboard_whose_scripts_never_load_says_so(tab: Tab, lab: Lab) -> None:
    """A server that keeps failing one module: a few reloads, then what went wrong and a
    button to try again, not a page that reloads forever."""
    page = tab.page
    refused: list[str] = []

    def refuse(route: Route) -> None:
        refused.append(route.request.url)
        route.abort("connectionreset")

    page.route("**/static/js/pages/usage.js", refuse)
    page.goto("/")
    expect(page.locator("#main .error")).to_contain_text("did not load")
    assert len(refused) == 4  # the first load and three reloads
    page.unroute("**/static/js/pages/usage.js")
    page.click("#main button")
    expect(page.locator("#token")).to_be_visible()


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
        tab = open_tab(browser, server.url, also=(provider.issuer,), server_log=server.log)
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


# Notebooks and services (root: they run as the tenant's Unix user) ---------------------

needs_workloads = pytest.mark.skipif(
    os.geteuid() != 0, reason="notebooks and services run as the tenant's Unix user (root)"
)


def _row(page: Page, table: str, key: str, name: str) -> Locator:
    return page.locator(f"#{table} tbody tr", has=page.locator(f"[data-{key}='{name}']"))


def _sees_nothing_of_webphys(browser: Browser, lab: Lab, running: str) -> None:
    """Bob (webbio) sees neither alice's notebook nor her service in the pages, and is
    refused at the proxy path of the one ``running`` now."""
    other = open_tab(browser, lab.server.url, server_log=lab.server.log)
    try:
        sign_in(other, lab.bob)
        page = other.page
        page.goto("/#/notebooks")
        expect(page.locator("#notebooks-table table")).to_be_visible()
        expect(page.locator("#notebooks-table")).not_to_contain_text("weblab")
        page.goto("/#/services")
        expect(page.locator("#services-table")).to_contain_text("No service")
        page.goto("/#/services/webphys/iris")
        expect(page.locator("#service-summary .error")).to_contain_text("not found")
        assert page.request.get(running).status == 403
        for view in ("/#/notebooks", "/#/services"):
            page.goto(view)
            page.wait_for_timeout(200)
            assert "weblab" not in page.content() and "iris" not in page.content()
        assert other.errors == [] and other.foreign_requests == []
    finally:
        other.close()


@needs_workloads
def test_a_member_launches_a_notebook_opens_jupyterlab_and_stops_it(
    tab: Tab, lab: Lab, browser: Browser
) -> None:
    if lab.jupyter is None:
        pytest.skip("needs the system's Python 3.11 for JupyterLab")
    page = tab.page
    sign_in(tab, lab.alice)
    page.click("nav a[href='#/notebooks']")
    page.fill("#nb-name", "weblab")
    page.fill("#nb-cpu", "0.5")
    # A refusal is shown at the field it names.
    page.fill("#nb-memory", "lots")
    page.click("#nb-launch")
    expect(page.locator("#nb-memory + .field-error")).to_contain_text("resources.memory")
    expect(page.locator("#nb-memory")).to_have_class(re.compile(r"\binvalid\b"))
    page.fill("#nb-memory", "512Mi")
    page.click("#nb-launch")
    expect(page.locator(".field-error")).to_have_count(0)

    row = _row(page, "notebooks-table", "notebook", "weblab")
    expect(row).to_contain_text("running", timeout=60_000)
    expect(row).to_contain_text("0.5 CPU, 512 MiB")
    expect(row).to_contain_text("(stops at 1h 0m)")
    _sees_nothing_of_webphys(browser, lab, "/user/alice/weblab/api/status")

    # Open: JupyterLab through the proxy, signed in by the dashboard's own session cookie.
    with page.expect_popup() as popup:
        row.locator("a.open").click()
    jupyter = popup.value
    # (Opened while JupyterLab still starts: the proxy's page that reloads itself, then it.)
    jupyter.wait_for_selector("#jp-main-dock-panel", timeout=90_000)
    assert "/user/alice/weblab/lab" in jupyter.url
    jupyter.close()
    # The proxy's traffic is the notebook's activity, shown as how long it has been idle.
    [shown] = [n for n in api(lab, lab.alice, "GET", "/notebooks").json() if n["name"] == "weblab"]
    seen = dt.datetime.fromisoformat(shown["last_activity_at"].replace("Z", "+00:00"))
    assert abs((dt.datetime.now(dt.UTC) - seen).total_seconds()) < 120

    page.once("dialog", lambda dialog: dialog.accept())
    row.locator("button[data-action=stop]").click()
    expect(row).to_contain_text("cancelled", timeout=30_000)
    expect(row.locator("a.open")).to_have_count(0)


@needs_workloads
def test_an_idle_notebook_shows_why_it_ended(tab: Tab, lab: Lab) -> None:
    if lab.jupyter is None:
        pytest.skip("needs the system's Python 3.11 for JupyterLab")
    lab.server.cli("tenant", "set", "webbio", "--notebook-idle-timeout", "3s")
    page = tab.page
    sign_in(tab, lab.bob)
    page.goto("/#/notebooks")
    page.fill("#nb-name", "idle")
    page.fill("#nb-cpu", "0.5")
    page.fill("#nb-memory", "512Mi")
    page.click("#nb-launch")
    row = _row(page, "notebooks-table", "notebook", "idle")
    expect(row).to_contain_text("culled after 3s idle", timeout=60_000)
    expect(row).to_contain_text("cancelled")


def _iris_document(lab: Lab) -> str:
    return f"""type: service
name: iris
command: [python3, {lab.model}]
env: {{MODEL_VERSION: "7", MODEL_LOAD_S: "0.2"}}
resources: {{cpu: 0.2, memory: 128Mi}}
replicas: 1
readiness: {{path: /healthz, interval: 1}}
"""


@needs_workloads
def test_a_member_creates_opens_scales_and_deletes_a_service(
    tab: Tab, lab: Lab, browser: Browser
) -> None:
    page = tab.page
    sign_in(tab, lab.alice)
    page.click("nav a[href='#/services']")
    # A document the API refuses says which field is wrong.
    page.fill("#svc-spec", "name: iris\ncommand: [python3]\nreplicas: {min: 3, max: 1}\n")
    page.click("#svc-apply")
    expect(page.locator("#service-messages .error")).to_contain_text("replicas")
    page.fill("#svc-spec", _iris_document(lab))
    page.click("#svc-apply")
    page.wait_for_url("**/#/services/webphys/iris")
    expect(page.locator("#service-ready")).to_contain_text("1 ready, 1 wanted", timeout=60_000)
    expect(page.locator("#service-replicas")).to_contain_text("ready")
    expect(page.locator("#log")).to_contain_text("model 7 loaded")

    # Open: the service answers through the proxy, to the dashboard's session.
    with page.expect_popup() as popup:
        page.click("#service-actions a.open")
    answer = popup.value
    expect(answer.locator("body")).to_contain_text('"version": "7"')
    answer.close()

    page.goto("/#/services")
    row = _row(page, "services-table", "service", "iris")
    expect(row).to_contain_text("1 / 1")
    expect(row).to_contain_text("tenant")
    _sees_nothing_of_webphys(browser, lab, "/svc/webphys/iris/")

    # Scaling re-applies the service's own document: one more replica, nothing rolled.
    page.goto("/#/services/webphys/iris")
    page.fill("#scale-min", "2")
    page.fill("#scale-max", "2")
    page.click("#scale")
    expect(page.locator("#service-ready")).to_contain_text("2 ready, 2 wanted", timeout=60_000)
    shown = api(lab, lab.alice, "GET", "/services/iris").json()
    assert shown["generation"] == 1 and {r["generation"] for r in shown["replicas"]} == {1}
    # Edit loads the service's own document, in YAML, scaled.
    page.click("#edit")
    expect(page.locator("#service-edit #svc-spec")).to_have_value(re.compile(r"min: 2\n"))
    expect(page.locator("#service-edit #svc-spec")).to_have_value(re.compile("MODEL_VERSION"))

    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#delete")
    expect(page.locator("#service-gone")).to_be_visible(timeout=30_000)
    page.goto("/#/services")
    expect(page.locator("#services-table")).to_contain_text("No service")
