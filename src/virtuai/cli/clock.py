"""Time for the commands that poll (``logs -f``, ``wait``).

The real clock is the default; tests hand a fake one in as the context object
(``CliRunner().invoke(app, args, obj=FakeClock())``) so that no test waits.
"""

from __future__ import annotations

import time

import typer


class Clock:
    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def clock_of(ctx: typer.Context) -> Clock:
    found = ctx.find_object(Clock)
    return found if found is not None else Clock()
