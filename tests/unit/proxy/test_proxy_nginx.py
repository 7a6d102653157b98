"""``proxy.nginx``: the configuration nginx accepts, and the access-log counter (real
files, a rotation in the middle: every request counted once)."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from virtuai.proxy.fastpath import Switch, uvicorn_config
from virtuai.proxy.nginx import Counter, render
from virtuai.proxy.nginxfind import find_modules


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx-light is not installed")
@pytest.mark.skipif(find_modules() is None, reason="libnginx-mod-http-lua is not installed")
def test_the_configuration_is_valid_nginx(tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        render(
            listen="127.0.0.1:1",
            api="127.0.0.1:2",
            directory=tmp_path,
            work=tmp_path,
            token="t0ken",
            user=None,
            modules=find_modules() or [],
        )
    )
    checked = subprocess.run(
        ["nginx", "-t", "-c", str(conf), "-p", str(tmp_path), "-e", str(tmp_path / "e.log")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    text = conf.read_text()
    assert 'proxy_set_header Authorization "";' in text
    assert "proxy_cache_valid 200 1s;" in text
    assert "load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;" in text
    assert "virtuai_session" in text  # the header filter names the session cookie
    # nginx drops an idle connection to the API before the API does: else a POST sent on
    # one as the API closes it is a 502 (nginx retries no POST).
    api_pool = re.search(r"upstream vai_api \{[^}]*keepalive_timeout (\d+)s;", text)
    assert api_pool is not None
    assert int(api_pool.group(1)) < uvicorn_config(None, Switch()).timeout_keep_alive


class _Fast(Counter):
    FLUSH_S = 0.05
    ROTATE_BYTES = 200


def test_every_logged_request_is_counted_once_across_rotations(tmp_path: Path) -> None:
    path = tmp_path / "count.log"
    counted: dict[tuple[str, int], int] = {}
    lock = threading.Lock()
    writer = {"file": path.open("ab")}  # as nginx: appends, reopens on the signal

    def count(batch: dict[tuple[str, int], int]) -> None:
        for key, n in batch.items():
            counted[key] = counted.get(key, 0) + n

    def reopen() -> None:
        with lock:
            writer["file"].close()
            writer["file"] = path.open("ab")

    counter = _Fast(path, count, reopen)
    try:
        for i in range(300):
            with lock:
                writer["file"].write(f"/svc/t/a/ {1 + i % 2}\n".encode())
                if i % 7 == 0:
                    writer["file"].write(b"/user/u/")  # half a line: finished next time
                    writer["file"].flush()
                    writer["file"].write(b"nb/ 3\n")
                writer["file"].flush()
            if i % 50 == 0:
                time.sleep(0.08)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and sum(counted.values()) < 343:
            time.sleep(0.05)
    finally:
        counter.close()
        writer["file"].close()
    assert counted == {("/svc/t/a/", 1): 150, ("/svc/t/a/", 2): 150, ("/user/u/nb/", 3): 43}
    assert path.stat().st_size < 2 * _Fast.ROTATE_BYTES  # it was rotated, many times
