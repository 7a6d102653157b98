"""Host-OS machinery shared by the local driver and the virtual-cluster runtime.

Below both ``drivers`` and ``vcruntime`` (which never import each other's
internals): cgroups v1/v2 (``cgroups``), tenants' Unix users (``users``),
crash-safe record files (``files``) and process identity (``processes``).
Nothing here knows of jobs, the database or the API.
"""
