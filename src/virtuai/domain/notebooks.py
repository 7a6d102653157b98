"""Notebooks, the pure part: where a notebook is served, where its home is, how it is started.

A notebook is a job of kind ``notebook`` whose one task runs JupyterLab behind
the platform's proxy (``virtuai.proxy``), at ``/user/<user>/<name>/``.  Jupyter
authenticates nobody itself: :data:`LAUNCHER` gives it an identity provider
that accepts a request only if it carries the per-notebook secret the proxy
adds (:data:`SECRET_HEADER`), so Jupyter's own token is neither needed nor
shown, and another process on the machine that connects to the port gets 403.
"""

from __future__ import annotations

KIND = "notebook"
DEFAULT_NAME = "lab"
SECRET_HEADER = "X-Virtuai-Notebook-Secret"
# Said by the proxy: "bearer" (an API client: no XSRF cookie needed) or "cookie" (a browser).
AUTH_HEADER = "X-Virtuai-Auth"
SECRET_ENV = "VIRTUAI_NOTEBOOK_SECRET"
IP_ENV = "VIRTUAI_NOTEBOOK_IP"
HOME_SUBDIR = "home"  # <workspaces>/<tenant>/home/<user>: the user's persistent home

# Run as ``python -c LAUNCHER BASE_URL USER HOME [OPTION...]`` with the notebook
# environment's python, as the tenant's user.  Standard library and Jupyter only: it runs
# in the tenant's environment.
# Command-line options outrank any config file the user keeps in ~/.jupyter.
LAUNCHER = r'''
import hmac, os, sys
from jupyter_server.auth.identity import IdentityProvider, User

SECRET = os.environ.pop("@SECRET_ENV@", "")
if not SECRET:
    sys.exit("virtuai: no notebook secret: notebooks are started by the platform")
BASE_URL, USER, HOME = sys.argv[1:4]


class ProxyIdentity(IdentityProvider):
    """Whoever the platform's proxy sends: it authenticated and authorised the user."""

    def get_user(self, handler):
        given = handler.request.headers.get("@SECRET_HEADER@", "")
        if not hmac.compare_digest(given.encode(), SECRET.encode()):
            return None
        if handler.request.headers.get("@AUTH_HEADER@") == "bearer":
            # An API client with a Bearer token: as Jupyter's own token, no XSRF cookie.
            handler._token_authenticated = True
        return User(username=USER)

    @property
    def auth_enabled(self):
        return True

    @property
    def login_available(self):
        return False

    def validate_security(self, app, ssl_options=None):
        pass


os.makedirs(HOME, mode=0o700, exist_ok=True)
os.chdir(HOME)
os.environ["HOME"] = HOME
from jupyterlab.labapp import LabApp

sys.argv = [
    "jupyter-lab",
    "--no-browser",
    "--ServerApp.ip=" + os.environ.get("@IP_ENV@", "127.0.0.1"),
    "--ServerApp.port=" + os.environ["MASTER_PORT"],
    "--ServerApp.port_retries=0",
    "--ServerApp.base_url=" + BASE_URL,
    "--ServerApp.root_dir=" + HOME,
    "--ServerApp.identity_provider_class=__main__.ProxyIdentity",
    "--IdentityProvider.token=",
    "--ServerApp.allow_remote_access=True",
    "--LabApp.news_url=",
    "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    *sys.argv[4:],
]
LabApp.launch_instance()
'''
for _name, _value in (
    ("@SECRET_ENV@", SECRET_ENV),
    ("@SECRET_HEADER@", SECRET_HEADER),
    ("@AUTH_HEADER@", AUTH_HEADER),
    ("@IP_ENV@", IP_ENV),
):
    LAUNCHER = LAUNCHER.replace(_name, _value)


def base_path(user: str, name: str) -> str:
    """Where the proxy serves the notebook (with the trailing slash Jupyter's base_url needs)."""
    return f"/user/{user}/{name}/"


def launch_command(python: str, user: str, name: str, home: str) -> tuple[str, ...]:
    return (python, "-c", LAUNCHER, base_path(user, name), user, home)


def format_duration(seconds: float) -> str:
    """``3600`` -> ``1h``; ``5400`` -> ``1h30m``; ``90`` -> ``1m30s``; ``2`` -> ``2s``."""
    total = max(0, round(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{v}{u}" for v, u in ((days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")) if v]
    return "".join(parts) or "0s"


def culled_reason(idle_timeout_s: float) -> str:
    return f"culled after {format_duration(idle_timeout_s)} idle"
