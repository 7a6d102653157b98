"""The local driver: tasks as supervised processes on this machine, limited by cgroups.

``LocalDriver`` (``driver.py``) fulfils ``virtuai.drivers.base.Driver``.  Each task
runs under its own detached supervisor (``supervisor.py``) that records the
outcome in the task's directory, so tasks survive a restart of the server.
Limits come from cgroups v1 or v2 (``cgroups.py``), the tenant's Unix user from
``users.py``, and the node's capacity from ``inventory.py``.
"""

from virtuai.drivers.local.driver import LocalDriver

__all__ = ["LocalDriver"]
