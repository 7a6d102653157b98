"""The in-task runner as a job runs it: real processes, no server.

It is started exactly as the job's command starts it (``python3 -c BOOTSTRAP
batch CONFIG SCRIPT ARGS`` with the compressed source in the environment).
"""

from __future__ import annotations

import base64
import json
import subprocess
import zlib
from pathlib import Path
from typing import Any

from virtuai.cli.slurmjob import runner_source
from virtuai.slurmrun.command import BOOTSTRAP, PYTHON, RUNNER_ENV

CONFIG: dict[str, Any] = {
    "name": "demo job",
    "ntasks": 3,
    "ntasks_per_node": 3,
    "cpus_per_task": 2,
    "mem_per_node": 3 * 2**30,
    "submit_dir": "/home/ada",
    "submit_host": "login1",
    "user": "ada",
    "output": "out-%x-%j.txt",
    "error": "out-%x-%j.txt",
    "open_mode": "truncate",
    "time_limit_s": 600,
    "signal": None,
    "array": [2, 4, 6],
    "partition": "gpu",
    "qos": None,
}


def run_batch(tmp: Path, script: str, config: dict[str, Any], *args: str, **extra_env: str) -> int:
    env = {
        "PATH": extra_env.pop("PATH", "/usr/bin:/bin"),
        **extra_env,
        "VIRTUAI_JOB_ID": "77",
        "VIRTUAI_ARRAY_ID": "75",
        "VIRTUAI_ARRAY_INDEX": "4",
        "VIRTUAI_RESTART_COUNT": "2",
        "VIRTUAI_TENANT": "ml",
        "RANK": "0",
        "WORLD_SIZE": "1",
        # One-node jobs get the runner without the step agents' module, as sbatch sends it.
        RUNNER_ENV: base64.b64encode(
            zlib.compress(runner_source(multi_node=False).encode())
        ).decode(),
    }
    command = [PYTHON, "-c", BOOTSTRAP, "batch", json.dumps(config), script, *args]
    return subprocess.run(command, env=env, cwd=tmp, timeout=60, check=False).returncode


def test_batch_step_environment_srun_and_scontrol(tmp_path: Path) -> None:
    script = """#!/bin/bash
echo "id=$SLURM_JOB_ID name=$SLURM_JOB_NAME array=${SLURM_ARRAY_JOB_ID}_$SLURM_ARRAY_TASK_ID"
echo "min=$SLURM_ARRAY_TASK_MIN max=$SLURM_ARRAY_TASK_MAX" \
  "n=$SLURM_ARRAY_TASK_COUNT step=$SLURM_ARRAY_TASK_STEP"
echo "ntasks=$SLURM_NTASKS cpus=$SLURM_CPUS_PER_TASK" \
  "mem=$SLURM_MEM_PER_NODE restart=$SLURM_RESTART_COUNT"
echo "submit=$SLURM_SUBMIT_DIR@$SLURM_SUBMIT_HOST partition=$SLURM_JOB_PARTITION rank=${RANK-unset}"
[ "$(scontrol show hostnames "$SLURM_JOB_NODELIST")" = "$SLURMD_NODENAME" ] && echo hostnames-ok
scontrol show hostnames 'lab-[0-2]' | tr '\\n' ' '; echo
srun -l bash -c 'echo "$SLURM_PROCID/$SLURM_NTASKS rank=$RANK local=$LOCAL_RANK"' | sort
srun -n 2 -l bash -c 'echo "step $SLURM_STEP_ID"' | sort
echo "args $*" >&2
exit 3
"""
    assert run_batch(tmp_path, script, CONFIG, "a b", "c") == 3
    text = (tmp_path / "out-demo job-77.txt").read_text()
    assert text.splitlines() == [
        "id=77 name=demo job array=75_4",
        "min=2 max=6 n=3 step=2",
        "ntasks=3 cpus=2 mem=3072 restart=2",
        "submit=/home/ada@login1 partition=gpu rank=unset",
        "hostnames-ok",
        "lab-0 lab-1 lab-2 ",
        "0: 0/3 rank=0 local=0",
        "1: 1/3 rank=1 local=1",
        "2: 2/3 rank=2 local=2",
        "0: step 1",
        "1: step 1",
        "args a b c",
    ]


def test_a_missing_output_directory_fails_the_job_as_in_slurm(tmp_path: Path) -> None:
    config = {**CONFIG, "output": "logs/%j.out", "error": "logs/%j.out"}
    assert run_batch(tmp_path, "#!/bin/sh\necho hi\n", config) == 1
    assert not (tmp_path / "logs").exists()


def test_signal_before_the_limit_reaches_the_batch_shell(tmp_path: Path) -> None:
    config = {
        **CONFIG,
        "time_limit_s": 60,
        "signal": {"number": 10, "seconds": 59, "batch_only": True},
        "open_mode": "append",
    }
    (tmp_path / "out-demo job-77.txt").write_text("before\n")
    script = "#!/bin/bash\ntrap 'echo got USR1; exit 0' USR1\nsleep 20 &\nwait\nexit 1\n"
    assert run_batch(tmp_path, script, config) == 0
    assert (tmp_path / "out-demo job-77.txt").read_text() == "before\ngot USR1\n"


def test_inside_a_real_slurm_allocation_slurm_stays_in_charge(tmp_path: Path) -> None:
    script = '#!/bin/sh\necho "$SLURM_JOB_ID $SLURM_JOB_NODELIST"; command -v srun || echo none\n'
    real = {"SLURM_JOB_ID": "999", "SLURM_JOB_NODELIST": "cn[01-02]", "SLURM_JOB_NAME": "x"}
    assert run_batch(tmp_path, script, CONFIG, **real) == 0
    first, srun = (tmp_path / "out-x-999.txt").read_text().splitlines()
    assert first == "999 cn[01-02]"
    assert "virtuai-slurm-" not in srun  # the real srun if there is one, never the shim


def test_gpus_per_task_binds_each_rank_to_its_own(tmp_path: Path) -> None:
    config = {**CONFIG, "gpus_per_task": 2, "ntasks": 2, "ntasks_per_node": 2}
    script = "#!/bin/sh\nsrun -l sh -c 'echo $CUDA_VISIBLE_DEVICES' | sort\n"
    assert run_batch(tmp_path, script, config, CUDA_VISIBLE_DEVICES="0,1,2,3") == 0
    assert (tmp_path / "out-demo job-77.txt").read_text() == "0: 0,1\n1: 2,3\n"
