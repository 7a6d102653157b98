"""Trace-driven simulator: replay a workload through the real scheduler on a virtual clock.

``virtuai sim`` (``virtuai.cli.sim``) is the front end.  The pieces, each usable alone:

- ``trace``: the trace CSV (one job per row) and its reader/writer;
- ``cluster``: the cluster YAML (pools of nodes, tenants with quotas, priority classes);
- ``policy``: the policy YAML, mapped onto ``virtuai.scheduler.snapshot.Policy``;
- ``engine``: the discrete-event loop that builds ``Snapshot``s and applies the
  ``Decisions`` of ``virtuai.scheduler.schedule``, the very code the control plane runs;
- ``metrics``: JCT, wait, utilization, Jain's index, Themis's finish-time fairness;
- ``isolated``: each job's completion time on its tenant's share of the cluster alone;
- ``plots`` and ``report``: the PNGs, the per-job CSVs and the one JSON document;
- ``generate``: synthetic clusters and traces, reproducible from a seed;
- ``data/``: a 2,000-job example trace, its 20-node cluster and example policies.

This package may import ``virtuai.scheduler``, ``virtuai.domain`` and
``virtuai.errors`` only (and numpy, matplotlib, PyYAML): never the store, the
control plane or the API.
"""

from virtuai.sim.cluster import ClusterSpec, load_cluster
from virtuai.sim.engine import SimRun, simulate
from virtuai.sim.generate import generate_cluster, generate_trace
from virtuai.sim.isolated import Isolation
from virtuai.sim.policy import PolicySpec, load_policy
from virtuai.sim.report import report_json, run_policies, write_report
from virtuai.sim.trace import TraceJob, read_trace, write_trace

__all__ = [
    "ClusterSpec",
    "Isolation",
    "PolicySpec",
    "SimRun",
    "TraceJob",
    "generate_cluster",
    "generate_trace",
    "load_cluster",
    "load_policy",
    "read_trace",
    "report_json",
    "run_policies",
    "simulate",
    "write_report",
    "write_trace",
]
