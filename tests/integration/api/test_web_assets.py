"""The dashboard and the docs pages are served from the package, with nothing from elsewhere."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from support.platform import Platform, driver_settings_for_tests, public_dir, remove_state
from virtuai import web
from virtuai.api.app import create_app
from virtuai.store.db import create_db_engine, make_session_factory
from virtuai.store.migrate import migrate

STATIC = Path(web.__file__).parent / "static"
# Static imports, and dynamic ones (``import("./app.js")``, the loader's).
IMPORT = re.compile(r"""(?:^\s*import\s[^"'(]*|\bimport\(\s*)["']([^"']+)["']""", re.MULTILINE)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    # Only files are looked at: no database work, so a SQLite file of its own is enough.
    home = tmp_path_factory.mktemp("webassets")
    engine = create_db_engine(f"sqlite:///{home / 'db.sqlite'}")
    migrate(engine)
    sessions: sessionmaker[Session] = make_session_factory(engine)
    state = public_dir("vai-state-")
    platform = Platform(sessions, state, driver_settings=driver_settings_for_tests())
    app = create_app(platform.context)
    web.mount(app)
    yield TestClient(app)
    remove_state(state, [])
    engine.dispose()


def test_the_dashboard_is_served_at_the_root_with_a_strict_policy(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert '<script src="/static/js/boot.js" defer>' in response.text  # it imports app.js
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "unsafe-inline" not in policy
    asset = client.get("/static/js/app.js")
    assert asset.status_code == 200 and "javascript" in asset.headers["content-type"]
    assert asset.headers["cache-control"] == "no-cache"
    assert (
        client.get(
            "/static/js/app.js", headers={"If-None-Match": asset.headers["etag"]}
        ).status_code
        == 304
    )
    assert client.get("/static/../__init__.py").status_code == 404


def test_every_module_the_dashboard_imports_is_in_the_package() -> None:
    modules = list(STATIC.glob("js/**/*.js"))
    assert len(modules) > 5
    for module in modules:
        for target in IMPORT.findall(module.read_text()):
            assert target.startswith("."), (module, target)  # nothing from a CDN
            assert (module.parent / target).resolve().is_file(), (module, target)
        text = module.read_text().replace("http://www.w3.org/2000/svg", "")
        assert "http://" not in text and "https://" not in text, module


@pytest.mark.parametrize("path", ["/api/v1/docs", "/api/v1/redoc"])
def test_the_api_docs_load_their_scripts_from_the_package(client: TestClient, path: str) -> None:
    page = client.get(path)
    assert page.status_code == 200
    urls = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert urls and all(u.startswith("/") for u in urls), urls
    for url in urls:
        assert client.get(url).status_code == 200, url
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert (
        client.get(path.replace("/api/v1", ""), follow_redirects=False).headers["location"] == path
    )
