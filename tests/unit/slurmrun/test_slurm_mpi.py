"""``srun --mpi=...`` in virtuai's srun: the choice of wire-up, mpirun's command line, its
output as srun shows it, and a clear refusal where no MPI runtime is (``slurmrun/mpi.py``).
Real MPI programs across nodes: ``test_slurm_steps.py`` and the two-machine e2e test."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from test_slurm_runner import CONFIG, run_batch

from virtuai.slurmrun import mpi


def test_the_mpi_type_is_the_option_else_slurm_mpi_type_else_none() -> None:
    assert mpi.wanted(None, {}) == "none"
    assert mpi.wanted(None, {"SLURM_MPI_TYPE": "pmix"}) == "pmix"
    assert mpi.wanted("pmi2", {"SLURM_MPI_TYPE": "pmix"}) == "pmi2"
    assert mpi.wanted("pmix_v4", {}) == "pmix_v4"
    with pytest.raises(mpi.MpiError, match=r"--mpi=openmpi: unknown MPI type"):
        mpi.wanted("openmpi", {})


def test_the_hostfile_names_each_node_by_its_index_with_its_ranks_as_slots() -> None:
    assert mpi.hostfile_text([(1, 2), (2, 1)]) == "vai-node-1 slots=2\nvai-node-2 slots=1\n"
    assert mpi.node_of("vai-node-12") == 12
    for bad in ("node-1", "vai-node-", "vai-node-1; rm -rf /", "localhost"):
        with pytest.raises(mpi.MpiError):
            mpi.node_of(bad)


def test_mpirun_uses_the_hostfile_and_the_agent_never_slurms_allocation() -> None:
    argv = mpi.mpirun_argv("/usr/bin/mpirun", "/t/hosts", "/t/lib/mpi-agent", 4, ["./a", "x"], True)
    pairs = {argv[i + 1]: argv[i + 2] for i, word in enumerate(argv[:-2]) if word == "--mca"}
    assert pairs["plm"] == "rsh" and pairs["plm_rsh_agent"] == "/t/lib/mpi-agent"
    assert pairs["ras"] == "^slurm" and pairs["if_base_do_not_resolve"] == "1"
    assert argv[argv.index("--hostfile") + 1] == "/t/hosts" and argv[argv.index("-np") + 1] == "4"
    assert "--tag-output" in argv and argv[-2:] == ["./a", "x"]


def test_the_rank_prelude_sets_slurms_per_rank_variables_from_open_mpis(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "OMPI_COMM_WORLD_RANK": "3",
        "OMPI_COMM_WORLD_LOCAL_RANK": "1",
        "OMPI_COMM_WORLD_SIZE": "4",
        "OMPI_COMM_WORLD_LOCAL_SIZE": "2",
        "CUDA_VISIBLE_DEVICES": "4,5,6,7",
        mpi.GPUS_ENV: "2",
    }
    shown = "$SLURM_PROCID $SLURM_LOCALID $RANK/$WORLD_SIZE $LOCAL_RANK/$LOCAL_WORLD_SIZE "
    shown += "$PMI_RANK/$PMI_SIZE $CUDA_VISIBLE_DEVICES $SLURM_GPUS_PER_TASK"
    argv = mpi.mpirun_argv("mpirun", "h", "a", 4, ["sh", "-c", f'echo "{shown}"'], False)
    command = argv[argv.index("/bin/sh") :]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["3", "1", "3/4", "1/2", "3/4", "6,7", "2"]


def test_mpiruns_noise_is_dropped_and_its_tags_become_srun_labels() -> None:
    noise = b"[vm:15443] plm:rsh: Warning: setpgid(15448,15448) failed in parent with errno=13\n"
    assert mpi.filter_line(noise, label=False) is None
    assert mpi.filter_line(b"[1,3]<stdout>:rank 3 of 4\n", label=True) == b"3: rank 3 of 4\n"
    assert mpi.filter_line(b"[1,3]<stdout>:x\n", label=False) == b"[1,3]<stdout>:x\n"
    assert mpi.filter_line(b"plain\n", label=True) == b"plain\n"


def test_without_an_mpi_runtime_srun_mpi_refuses_and_says_what_to_do(tmp_path: Path) -> None:
    """No mpirun on the PATH: --mpi=pmix fails the step (never N unconnected copies of rank
    0), --mpi=none and a plain srun run as before."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "sh", "true", "echo", "cat"):
        (bin_dir / tool).symlink_to(f"/usr/bin/{tool}" if tool != "sh" else "/bin/sh")
    script = """#!/bin/bash
srun --mpi=pmix true; echo "pmix: $?"
SLURM_MPI_TYPE=pmi2 srun true; echo "pmi2 from the environment: $?"
srun --mpi=none true; echo "none: $?"
srun -n 2 true; echo "plain: $?"
"""
    config = {**CONFIG, "array": None, "ntasks": 2, "ntasks_per_node": 2}
    assert run_batch(tmp_path, script, config, PATH=str(bin_dir)) == 0
    lines = (tmp_path / "out-demo job-77.txt").read_text().splitlines()
    assert "pmix: 1" in lines and "pmi2 from the environment: 1" in lines
    assert "none: 0" in lines and "plain: 0" in lines
    refusal = next(line for line in lines if line.startswith("srun: error: --mpi=pmix"))
    assert "no MPI runtime on this node" in refusal and "openmpi-bin" in refusal
