"""A child that dies with its parent: ``PR_SET_PDEATHSIG``, standard library only (the
nginx engine sets it before ``/healthz`` answers)."""

from __future__ import annotations

import ctypes
import signal

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: signal.Signals = signal.SIGTERM) -> None:
    """Have the kernel send ``sig`` to this process when the thread that forked it ends,
    even by kill -9 of its process.  Cleared by a change of user: set it after one."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
