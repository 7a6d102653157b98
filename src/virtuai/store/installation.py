"""The installation id: what keeps two installations on one host out of each other's way.

Every instance of one installation shares the database, so the id lives there
(``meta``), made once by whichever instance starts first.  Host-global names
(the tasks' cgroup, tenants' Unix users, the workspaces, the virtual clusters'
kernel objects) are derived from it (``Settings.for_installation``), so a second
installation on the same host, with its own database, never kills, reuses or
"repairs" the first one's objects.

An installation made before the id existed keeps the empty id, which stands for
the names it has always used (its users, workspaces and running tasks stay
where they are): migration 0016 records it.
"""

from __future__ import annotations

import secrets
import string

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from virtuai.store.db import read_transaction, transaction
from virtuai.store.models import MetaRow

KEY = "installation_id"
LENGTH = 6
# Lower-case letters and digits only: the id ends up in Unix user and interface names.
ALPHABET = string.ascii_lowercase + string.digits


def new_installation_id() -> str:
    # A letter first: Unix user names (``vai<id>-physics``) are safest not starting a
    # part with a digit, and it reads as a name.
    return secrets.choice(string.ascii_lowercase) + "".join(
        secrets.choice(ALPHABET) for _ in range(LENGTH - 1)
    )


def installation_id(sessions: sessionmaker[Session]) -> str:
    """This installation's id, made on first call (race-safe between instances)."""
    with read_transaction(sessions) as session:
        row = session.get(MetaRow, KEY)
        if row is not None:
            return row.value
    try:
        with transaction(sessions) as session:
            session.add(MetaRow(key=KEY, value=new_installation_id()))
    except IntegrityError:
        pass  # another instance made it first: its id is the one
    with transaction(sessions) as session:
        row = session.get(MetaRow, KEY)
        assert row is not None
        return row.value
