"""What the API needs from the running server, handed over by the composition root."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from virtuai.api.browser import BrowserSessions
from virtuai.auth.oidc import OidcVerifier
from virtuai.domain.clock import Clock
from virtuai.domain.pyenvs import EnvOptions
from virtuai.domain.services import PortRules
from virtuai.drivers.base import Driver
from virtuai.services.metrics import Metrics
from virtuai.services.notebooks import NotebookOptions
from virtuai.services.planning import SchedulingRules
from virtuai.services.submitbasis import SubmitBasisCache
from virtuai.services.tokencache import TokenCache
from virtuai.services.vclusters import VcOptions, VcRuntimeAccess
from virtuai.store.groupcommit import GroupCommit


@dataclass
class ApiContext:
    sessions: sessionmaker[Session]
    clock: Clock
    verifier: OidcVerifier
    drivers: Mapping[str, Driver]
    rules: SchedulingRules
    # Virtual clusters: the runtime (or why there is none) and the settings the API uses.
    vcs: VcRuntimeAccess = field(default_factory=VcRuntimeAccess)
    vc_options: VcOptions = field(default_factory=VcOptions)
    # Largest request body accepted (settings `limits.max_body`), checked before anything else.
    max_body_bytes: int = 1024 * 1024
    # The key of job tokens (``auth.jobtokens``); empty: jobs cannot act on themselves.
    job_token_key: bytes = b""
    # Prometheus metrics (None: create_app makes them) and who besides admins may read them.
    metrics: Metrics | None = None
    metrics_readers: frozenset[str] = frozenset()
    # Set after a commit that gives the loops work, so they run now instead of at the next tick.
    wake: threading.Event = field(default_factory=threading.Event)
    # Browser sign-in (session cookie, OIDC code flow): see api/browser.py.
    browser: BrowserSessions = field(default_factory=BrowserSessions)
    # Callers by token hash for a moment: most requests then cost no authentication query.
    tokens: TokenCache = field(default_factory=TokenCache)
    # Where the SSH keys of sites are kept (0700; each key 0600); None: sites cannot be added.
    site_keys_dir: Path | None = None
    # Python environments (`services.environments`); None: this server builds none.
    environments: EnvOptions | None = None
    # Notebooks (`services.notebooks`); None: this server runs none.
    notebooks: NotebookOptions | None = None
    # The port every machine's server listens on: port-forward to a task on another node
    # goes through that node's server (0: refused).
    peer_port: int = 0
    # Services (`services.serving`): the idle timeout of those that do not set theirs.
    service_idle_timeout_s: int = 900
    # Which fixed ports (`port: N`) services may take (not the ephemeral range, the
    # replicas' range or the server's own port).
    service_port_rules: PortRules = field(default_factory=PortRules)
    # Why services' replicas' ports are not guarded on this machine (None: they are).
    service_ports_problem: str | None = None
    # Submits are committed in groups, several per transaction (store/groupcommit.py).
    submits: GroupCommit = field(init=False)
    # SQLite with API workers: the file their group commits take turns on (groupcommit.py).
    submit_lock: Path | None = None
    # What every submit reads (its tenant, the nodes, the quotas), kept between
    # transactions for a moment (services/submitbasis.py).
    submit_basis: SubmitBasisCache = field(init=False)

    def __post_init__(self) -> None:
        self.submits = GroupCommit(
            self.sessions, name="virtuai-submits", lock_path=self.submit_lock
        )
        self.submit_basis = SubmitBasisCache(self.rules)
