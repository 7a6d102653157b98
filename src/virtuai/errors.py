"""The one exception tree of virtuai.

    VirtuaiError                      code              HTTP
    ├── InvalidRequest                invalid           422   bad input; names the field
    ├── Unauthenticated               unauthenticated   401
    ├── Forbidden                     forbidden         403
    ├── NotFound                      not_found         404   also for ids of other tenants
    ├── Conflict                      conflict          409   already exists / wrong state
    ├── Unschedulable                 unschedulable     422   can never run (quota, capacity)
    ├── DriverError                   driver_error      502   a driver failed (process, cgroup)
    ├── UpstreamFailed                upstream_failed   502   a workload behind the proxy broke off
                                                              a request it had received
    ├── Unavailable                   unavailable       503   the database cannot be written now
    └── ConfigurationError            configuration     500   the platform is set up wrongly
        └── NotOffered                configuration     409   a feature this server cannot offer
                                                              (no VC runtime): not a server error

Every error carries a stable machine-readable ``code``, a plain-words ``message``
and, where one field is to blame, the ``field``.  They are mapped to HTTP in
exactly one place (``virtuai.api.errors``).  Lower-level failures are converted
to these types at the boundary where they happen.
"""

from __future__ import annotations


class VirtuaiError(Exception):
    code = "error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def to_dict(self) -> dict[str, str | None]:
        return {"code": self.code, "message": self.message, "field": self.field}


class InvalidRequest(VirtuaiError):
    code = "invalid"


class Unauthenticated(VirtuaiError):
    code = "unauthenticated"


class Forbidden(VirtuaiError):
    code = "forbidden"


class NotFound(VirtuaiError):
    code = "not_found"


class Conflict(VirtuaiError):
    code = "conflict"


class Unschedulable(VirtuaiError):
    code = "unschedulable"


class DriverError(VirtuaiError):
    code = "driver_error"


class UpstreamFailed(VirtuaiError):
    """A workload (a service's replica) crashed or closed the connection after a request
    that cannot be sent twice had reached it: the proxy does not retry it."""

    code = "upstream_failed"


class Unavailable(VirtuaiError):
    code = "unavailable"


class ConfigurationError(VirtuaiError):
    code = "configuration"


class NotOffered(ConfigurationError):
    """The request is fine, but this server is not set up to do it (virtual clusters
    without root, say).  409, not 500: nothing failed, and a retry will not help."""


__all__ = [
    "ConfigurationError",
    "Conflict",
    "DriverError",
    "Forbidden",
    "InvalidRequest",
    "NotFound",
    "NotOffered",
    "Unauthenticated",
    "Unavailable",
    "Unschedulable",
    "UpstreamFailed",
    "VirtuaiError",
]
