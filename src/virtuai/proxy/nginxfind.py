"""Whether this machine can run the nginx engine (``proxy.nginx``): its binary and the
dynamic modules it loads, at Debian's paths.  Standard library only: ``virtuai up``
decides ``proxy.engine: auto`` before the server's heavy modules are imported."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

BINARIES = ("nginx", "/usr/sbin/nginx")  # on the PATH, else Debian's (not on a user's PATH)
# Where Debian's nginx modules are (``/usr/share/nginx/modules`` links to the first), and
# the ones the engine needs, in load order: the Lua module needs the development kit.
MODULE_DIRS = (Path("/usr/lib/nginx/modules"), Path("/usr/share/nginx/modules"))
MODULES = ("ndk_http_module.so", "ngx_http_lua_module.so")
BINARY_PACKAGE = "nginx-light"
MODULES_PACKAGE = "libnginx-mod-http-lua"


def find_binary(binaries: Sequence[str] = BINARIES) -> str | None:
    return next((found for name in binaries if (found := shutil.which(name))), None)


def find_modules(directories: Sequence[Path] = MODULE_DIRS) -> list[Path] | None:
    """The dynamic modules the engine loads (Lua, for the balancer and the cookie filter),
    from the first of ``directories`` that has them all; ``None`` if none has."""
    for directory in directories:
        paths = [directory / name for name in MODULES]
        if all(path.is_file() for path in paths):
            return paths
    return None


def missing(
    binaries: Sequence[str] = BINARIES, directories: Sequence[Path] = MODULE_DIRS
) -> str | None:
    """Why the nginx engine cannot run here (what to install), or ``None`` if it can."""
    if find_binary(binaries) is None:
        return f"nginx is not installed (Debian: apt-get install {BINARY_PACKAGE})"
    if find_modules(directories) is None:
        return f"nginx's Lua module is not installed (Debian: apt-get install {MODULES_PACKAGE})"
    return None
