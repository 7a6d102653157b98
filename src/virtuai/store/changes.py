"""A change counter on jobs, kept by the database: what the scheduling pass reads incrementally.

Every insert of a job, and every update of a column the scheduler reads, sets the
row's ``change_seq`` in the same transaction, by a trigger, so that no write path
(ORM, Core, bulk, another version of the code) can forget it.  The columns that
the scheduling pass itself writes on every waiting job (its reason, queue
position, expected start) and a notebook's activity are left out: writing them
is not a change the scheduler must see again.

A reader keeps a *horizon* and asks for the rows with ``change_seq >= horizon``
(an index scan of what changed).  The horizon is read before the rows, so that
a write committed after the read is always at or above it:

- SQLite: one writer at a time, under the database's write lock.  The trigger
  gives ``MAX(change_seq) + 1``, read under that lock, so the order of the
  numbers is the order of the commits; the horizon is the reader's
  ``MAX(change_seq) + 1``.
- PostgreSQL: writers run at once and commit in any order, so a counter could
  commit below a number already read.  The trigger stores the writing
  transaction's id (``txid_current()``), and the horizon is the oldest
  transaction still running when the reader looked (``txid_snapshot_xmin``):
  whatever commits later has an id at least that.  A row may then be read
  twice; the reader skips what it has seen (same id, same number).

Jobs are never deleted.  A purge of old jobs must keep the row with the highest
``change_seq``, or SQLite's next number could fall below a reader's horizon.
"""

from __future__ import annotations

import hashlib

from sqlalchemy import Connection, func, select, text
from sqlalchemy.orm import Session

from virtuai.store.models import JobRow

# Written on every waiting job by the scheduling pass (or often, by the notebook
# activity recorder), and read by no scheduling decision.
QUIET_COLUMNS = frozenset(
    {"reason", "queue_position", "expected_start_at", "activity_at", "change_seq"}
)
TRIGGER_PREFIX = "jobs_change_seq_"
_PG_FUNCTION = "virtuai_jobs_change_seq"


def watched_columns() -> list[str]:
    """Every column of ``jobs`` whose update counts as a change (the model's, in order)."""
    return [c.name for c in JobRow.__table__.columns if c.name not in QUIET_COLUMNS]


def _suffix() -> str:
    # The triggers' names carry their column list's digest: a model with another list
    # (a column added) gets new triggers at the next ``migrate()``.
    return hashlib.sha256(",".join(watched_columns()).encode()).hexdigest()[:10]


def trigger_names() -> list[str]:
    suffix = _suffix()
    return [f"{TRIGGER_PREFIX}ins_{suffix}", f"{TRIGGER_PREFIX}upd_{suffix}"]


def install_change_triggers(connection: Connection) -> None:
    """Create the triggers if they are missing or out of date; nothing when current.

    Called by ``migrate()`` after every upgrade, in its transaction: SQLite's batch
    migrations copy the table and lose its triggers, and a new column of the model must
    be watched too."""
    dialect = connection.dialect.name
    existing = set(_existing_triggers(connection))
    wanted = trigger_names()
    if existing == set(wanted):
        return
    drop_change_triggers(connection)
    insert_name, update_name = wanted
    columns = ", ".join(f'"{c}"' for c in watched_columns())
    if dialect == "postgresql":
        connection.execute(
            text(
                f"CREATE OR REPLACE FUNCTION {_PG_FUNCTION}() RETURNS trigger "
                "LANGUAGE plpgsql AS $$ BEGIN NEW.change_seq := txid_current(); "
                "RETURN NEW; END $$"
            )
        )
        for name, event in ((insert_name, "INSERT"), (update_name, f"UPDATE OF {columns}")):
            connection.execute(
                text(
                    f'CREATE TRIGGER "{name}" BEFORE {event} ON jobs '
                    f"FOR EACH ROW EXECUTE FUNCTION {_PG_FUNCTION}()"
                )
            )
        return
    # SQLite cannot assign NEW in a trigger: the row is updated after its write, which
    # does not fire the update trigger again (change_seq is not watched).
    body = (
        "BEGIN UPDATE jobs SET change_seq = "
        "(SELECT COALESCE(MAX(change_seq), 0) + 1 FROM jobs) WHERE id = NEW.id; END"
    )
    connection.execute(text(f'CREATE TRIGGER "{insert_name}" AFTER INSERT ON jobs {body}'))
    connection.execute(
        text(f'CREATE TRIGGER "{update_name}" AFTER UPDATE OF {columns} ON jobs {body}')
    )


def drop_change_triggers(connection: Connection) -> None:
    """For a downgrade below the column: the triggers name it."""
    for name in _existing_triggers(connection):
        connection.execute(
            text(f'DROP TRIGGER IF EXISTS "{name}"' + _on_jobs(connection.dialect.name))
        )


def _on_jobs(dialect: str) -> str:
    return " ON jobs" if dialect == "postgresql" else ""


def _existing_triggers(connection: Connection) -> list[str]:
    if connection.dialect.name == "postgresql":
        query = (
            "SELECT tgname FROM pg_trigger WHERE tgrelid = 'jobs'::regclass "
            "AND NOT tgisinternal AND tgname LIKE :prefix"
        )
    else:
        query = (
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'jobs' "
            "AND name LIKE :prefix"
        )
    return list(connection.execute(text(query), {"prefix": TRIGGER_PREFIX + "%"}).scalars())


def change_horizon(session: Session) -> int:
    """Where the next read of changes starts: every write committed after this call has a
    ``change_seq`` at least this.  Read it before the rows it stands for."""
    if session.get_bind().dialect.name == "postgresql":
        return int(
            session.execute(text("SELECT txid_snapshot_xmin(txid_current_snapshot())")).scalar_one()
        )
    return int(session.scalar(select(func.coalesce(func.max(JobRow.change_seq), 0))) or 0) + 1
