"""A tiny real MPI program (C, built with Open MPI's ``mpicc``) for the MPI step tests.

Each rank prints its rank, the world's size, the node Slurm says it is on, and the sum
of ``rank + 1`` over every rank (an ``MPI_Allreduce``): ``N (N + 1) / 2`` only if all N
ranks really are one ``MPI_COMM_WORLD``.  ``scripts/system-packages.sh`` installs Open
MPI (``openmpi-bin``, ``libopenmpi-dev``); in CI a missing one fails, elsewhere it skips.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SOURCE = r"""
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv) {
    int rank, size, mine, sum = 0;
    const char *node = getenv("SLURM_NODEID");
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    mine = rank + 1;
    MPI_Allreduce(&mine, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    printf("rank %d of %d on node %s sum %d\n", rank, size, node ? node : "?", sum);
    MPI_Finalize();
    return 0;
}
"""


def missing() -> str | None:
    """Why the MPI tests cannot run here, or None."""
    for tool in ("mpicc", "mpirun"):
        if shutil.which(tool) is None:
            return f"needs Open MPI ({tool}: scripts/system-packages.sh installs it)"
    return None


def require() -> None:
    """Skip (fail in CI, whose machine must have what the scripts install) without MPI."""
    reason = missing()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def build(directory: Path) -> Path:
    """``directory/mpi_hello``, readable and runnable by every user (tenants' tasks)."""
    require()
    directory.mkdir(parents=True, exist_ok=True)
    source = directory / "mpi_hello.c"
    source.write_text(SOURCE)
    binary = directory / "mpi_hello"
    subprocess.run(
        ["mpicc", "-O1", "-o", str(binary), str(source)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    binary.chmod(0o755)
    return binary
