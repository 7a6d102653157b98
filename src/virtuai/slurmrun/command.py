"""The job command of a ``virtuai sbatch`` job, made by the CLI and recognised by drivers.

``[PYTHON, "-c", BOOTSTRAP, "batch", CONFIG, SCRIPT, *ARGS]``: the runner (sent
compressed in ``$VIRTUAI_SLURM_RUNNER``) runs ``SCRIPT`` as the batch step with
the resolved sizes in ``CONFIG`` (JSON).  A Slurm site's driver recognises it
and hands the script to the site's own ``sbatch`` with those sizes
(``parse_batch_command``).  Not shipped with the job: only the CLI and the
drivers import it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

RUNNER_ENV = "VIRTUAI_SLURM_RUNNER"
STEP_KEY_ENV = "VIRTUAI_SLURM_STEP_KEY"  # as runner.STEP_KEY_ENV (shipped)
# Set by a Slurm site's batch script: the runner is Slurm's batch step itself, and links
# the script's output files at this prefix (``.out``/``.err``) for virtuai's logs.
NATIVE_ENV = "VIRTUAI_SLURM_NATIVE"  # as runner.NATIVE_ENV
LOG_PREFIX_ENV = "VIRTUAI_SLURM_LOG_PREFIX"  # as runner.LOG_PREFIX_ENV
BOOTSTRAP = (
    "import base64, os, zlib; _RUNNER_SOURCE = zlib.decompress(base64.b64decode("
    f"os.environ.pop({RUNNER_ENV!r}))).decode(); exec(_RUNNER_SOURCE)"
)
# Not the first python3 on the user's PATH (--export sends it): one every user can run.
PYTHON = "/usr/bin/python3"
MODE = "batch"


@dataclass(frozen=True, slots=True)
class BatchCommand:
    config: dict[str, Any]
    script: str
    args: tuple[str, ...]


def batch_command(config: dict[str, Any], script: str, args: Sequence[str]) -> list[str]:
    return [PYTHON, "-c", BOOTSTRAP, MODE, json.dumps(config), script, *args]


def parse_batch_command(command: Sequence[str]) -> BatchCommand | None:
    """The parts of a ``virtuai sbatch`` job's command; ``None`` for any other command."""
    if len(command) < 6 or list(command[1:4]) != ["-c", BOOTSTRAP, MODE]:
        return None
    try:
        config = json.loads(command[4])
    except ValueError:
        return None
    if not isinstance(config, dict) or not {"ntasks", "cpus_per_task"} <= config.keys():
        return None
    return BatchCommand(config, command[5], tuple(command[6:]))
