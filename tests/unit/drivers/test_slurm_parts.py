"""The pure parts of the Slurm driver: batch scripts, and Slurm's output read back."""

from __future__ import annotations

import shlex

import pytest

from virtuai.cli.slurmjob import job_body
from virtuai.domain.workload import TaskOutcome
from virtuai.drivers.slurm import driver as slurm_driver
from virtuai.drivers.slurm.batch import (
    BatchRequest,
    batch_script,
    sbatch_command,
    sbatch_options,
    submit_command,
)
from virtuai.drivers.slurm.client import Backlog, SlurmClient, _gpus, _limit
from virtuai.drivers.slurm.driver import SiteConfig, SlurmSiteDriver, native_batch
from virtuai.drivers.slurm.states import parse_sacct, parse_squeue, result_of
from virtuai.drivers.slurm.transport import SshTarget
from virtuai.slurmfront.resolve import Context, resolve
from virtuai.slurmrun.command import parse_batch_command

MIB = 2**20


def request(**overrides: object) -> BatchRequest:
    values: dict[str, object] = {
        "key": "12.3",
        "token": "tok",
        "command": ["python", "train.py", "--lr", "1e-3; rm -rf /"],
        "env": {"VIRTUAI_JOB_ID": "12", "RANK": "0", "A": "it's"},
        "tasks": 4,
        "nodes": 2,
        "cpu_milli": 1500,
        "memory": 3000 * MIB,
        "gpus": 1,
        "walltime_s": 3601,
        "log_dir": "/home/u/virtuai/logs",
        "partition": "gpu",
        "account": "phy",
    }
    values.update(overrides)
    return BatchRequest(**values)  # type: ignore[arg-type]


def test_a_gang_spread_evenly_asks_for_nodes_tasks_per_node_and_gpus_per_node() -> None:
    opts = sbatch_options(request())
    assert "--job-name=vai-12.3" in opts and "--comment=virtuai:tok:12.3" in opts
    assert "--nodes=2" in opts and "--ntasks-per-node=2" in opts and "--gres=gpu:2" in opts
    assert "--time=61" in opts  # minutes, rounded up
    assert "--cpus-per-task=2" in opts and "--mem-per-cpu=1500M" in opts
    assert "--partition=gpu" in opts and "--account=phy" in opts
    assert "--no-requeue" in opts
    assert not any(o.startswith("--signal") for o in opts)


def test_an_uneven_gang_asks_for_tasks_and_gpus_per_task() -> None:
    opts = sbatch_options(request(tasks=3, nodes=2))
    assert "--ntasks=3" in opts and "--gpus-per-task=1" in opts
    assert not any(o.startswith("--nodes") for o in opts)


def test_the_checkpoint_signal_is_asked_only_when_the_job_gives_one() -> None:
    opts = sbatch_options(request(checkpoint_signal=10, checkpoint_grace_s=60))
    assert "--signal=10@60" in opts


def test_the_script_quotes_everything_and_leaves_per_task_variables_to_slurm() -> None:
    script = batch_script(request())
    assert "export A='it'\"'\"'s'" in script
    assert "export RANK" not in script.split("srun")[0].replace('export RANK="$SLURM', "")
    assert "'1e-3; rm -rf /'" in script
    assert 'RANK="$SLURM_PROCID"' in script
    assert "--output=/home/u/virtuai/logs/vai-12.3.%t.out" in script


def test_the_submit_command_looks_the_key_up_before_sbatch() -> None:
    command = submit_command(request())
    assert command.index("squeue") < command.index("sacct") < command.index("sbatch")
    assert "virtuai:tok:12.3" in command


def test_squeue_lines_are_read_with_slurms_reason() -> None:
    queue = parse_squeue("7|PENDING|Resources||virtuai:t:1.0\n8|RUNNING|None|n[1-2]|c\n")
    assert queue["7"].shown == "PENDING (Resources)"
    assert queue["8"].shown == "RUNNING on n[1-2]"


SACCT = """\
10|COMPLETED|0:0|2026-12-05T03:00:00|2026-12-05T03:00:05|5|cpu=2,gres/gpu=2,mem=1G|n1|None
10.batch|COMPLETED|0:0|2026-12-05T03:00:00|2026-12-05T03:00:05|5|cpu=1|n1|
11|FAILED|3:0|2026-12-05T03:00:00|2026-12-05T03:00:01|1|cpu=1|n1|None
12|FAILED|0:9|2026-12-05T03:00:00|2026-12-05T03:00:01|1|cpu=1|n1|None
12.0|OUT_OF_MEMORY|0:125|2026-12-05T03:00:00|2026-12-05T03:00:01|1|cpu=1|n1|
13|TIMEOUT|0:0|2026-12-05T03:00:00|2026-12-05T03:01:01|61|cpu=1|n1|None
14|NODE_FAIL|0:0|2026-12-05T03:00:00|2026-12-05T03:00:30|30|cpu=1|n2|None
15|CANCELLED by 999|0:15|2026-12-05T03:00:00|2026-12-05T03:00:02|2|cpu=1|n1|None
16|RUNNING|0:0|2026-12-05T03:00:00|Unknown|2|cpu=1|n1|None
"""


@pytest.mark.parametrize(
    ("slurm_id", "outcome", "code", "words"),
    [
        ("10", TaskOutcome.EXITED, 0, "COMPLETED"),
        ("11", TaskOutcome.EXITED, 3, "FAILED"),
        ("12", TaskOutcome.KILLED_OOM, None, "OUT_OF_MEMORY"),
        ("13", TaskOutcome.KILLED_WALLTIME, None, "TIMEOUT"),
        ("14", TaskOutcome.LOST, None, "NODE_FAIL"),
        ("15", TaskOutcome.KILLED_CANCEL, None, "CANCELLED"),
    ],
)
def test_ended_slurm_jobs_become_outcomes_in_slurms_words(
    slurm_id: str, outcome: TaskOutcome, code: int | None, words: str
) -> None:
    entries = parse_sacct(SACCT)
    result = result_of(entries[slurm_id], now=0.0)
    assert (result.outcome, result.exit_code) == (outcome, code)
    assert words in result.message


def test_accounting_reads_elapsed_gpus_and_whether_it_ended() -> None:
    entries = parse_sacct(SACCT)
    assert entries["10"].elapsed_s == 5 and entries["10"].gpus() == 2
    assert not entries["16"].ended and entries["16"].end is None
    assert entries["15"].state == "CANCELLED"


def test_sinfo_gres_and_time_limits() -> None:
    assert _gpus("gpu:2") == 2 and _gpus("gpu:a100:4(S:0-1),nic:1") == 4 and _gpus("(null)") == 0
    assert _limit("infinite") is None
    assert _limit("1:00:00") == 3600 and _limit("2-00:00:00") == 172800 and _limit("30:00") == 1800


@pytest.mark.parametrize(
    ("login", "user", "host", "port"),
    [("a@h", "a", "h", 22), ("a@h.example.org:2222", "a", "h.example.org", 2222)],
)
def test_ssh_logins_are_parsed(login: str, user: str, host: str, port: int) -> None:
    target = SshTarget.parse(login, "/k", "")
    assert (target.user, target.host, target.port) == (user, host, port)


@pytest.mark.parametrize("login", ["host", "@host", "user@"])
def test_bad_logins_are_refused(login: str) -> None:
    with pytest.raises(ValueError):
        SshTarget.parse(login, "/k", "")


def test_the_expected_wait_is_slurms_backlog() -> None:
    # Behind the pending jobs: the latest start Slurm expects among them.
    assert Backlog(1000, [1100, 1600, None], [1200], 0).expected_wait_s() == 600
    # Pending jobs without any estimate: nobody can tell.
    assert Backlog(1000, [None], [1200], 0).expected_wait_s() is None
    # Nothing pending: now if CPUs are idle, else when the first running job ends.
    assert Backlog(1000, [], [1300, 1200], 2).expected_wait_s() == 0
    assert Backlog(1000, [], [1300, 1200], 0).expected_wait_s() == 200
    assert Backlog(1000, [], [], 0).expected_wait_s() is None
    assert Backlog(1000, [900], [], 0).expected_wait_s() == 0


SBATCH_SCRIPT = "#!/bin/bash\n#SBATCH -N 2 --ntasks-per-node=4 -c 2 --gres=gpu:a100:2\nsrun x\n"


def sbatch_request(*cli: str) -> BatchRequest:
    """What the site driver asks for a job of ``virtuai sbatch`` (its command as the CLI
    makes it, the sizes as virtuai holds them: per node)."""
    res = resolve(SBATCH_SCRIPT, list(cli), Context("t.sh", "/home/a", "a", {}), ["arg 1"])
    body, _notes = job_body(
        res, SBATCH_SCRIPT, env={}, submit_dir="/home/a", submit_host="h", user="a", local=False
    )
    return request(
        key="7.1",
        command=body["command"],
        env={**body["env"], "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "MASTER_PORT": "29500"},
        tasks=2,
        nodes=1,  # virtuai packed both nodes on one: Slurm must still get two
        cpu_milli=8000,
        memory=res.mem_per_node,
        gpus=2,
        walltime_s=600,
        workdir="/home/u/w",
        native=native_batch(body["command"], 2),
    )


def test_a_job_of_virtuai_sbatch_is_recognised_by_its_command_and_no_other_is() -> None:
    native = sbatch_request().native
    assert native is not None
    assert (native.nodes, native.ntasks, native.ntasks_per_node, native.cpus_per_task) == (
        2,
        8,
        4,
        2,
    )
    assert (native.gpus_per_node, native.gpu_type, native.name) == (2, "a100", "t.sh")
    assert native_batch(["python", "-c", "x", "batch", "{}", "s"], 1) is None
    assert native_batch(["python", "train.py"], 1) is None
    assert parse_batch_command(sbatch_request().command) is not None


def test_a_job_of_virtuai_sbatch_gives_slurm_the_scripts_own_sizes() -> None:
    opts = sbatch_options(sbatch_request("--signal=B:USR1@90", "-J", "my job"))
    assert '--job-name="my job"' in opts
    assert "--nodes=2" in opts and "--ntasks=8" in opts and "--ntasks-per-node=4" in opts
    assert "--cpus-per-task=2" in opts and "--gres=gpu:a100:2" in opts
    assert f"--mem={sbatch_request().memory // MIB}M" in opts  # per node
    assert "--time=10" in opts and "--signal=B:10@90" in opts
    assert "--chdir=/home/u/w" in opts and "--output=/home/u/virtuai/logs/vai-7.1.batch.out" in opts
    assert not any(o.startswith("--mem-per-cpu") for o in opts)


def test_a_job_of_virtuai_sbatch_execs_its_runner_as_the_batch_step_without_srun() -> None:
    req = sbatch_request()
    script = batch_script(req)
    assert "srun" not in script.split("# written by virtuai")[1].split("exec ")[0]
    last = "exec " + script.split("\nexec ", 1)[1]
    assert shlex.split(last) == ["exec", *req.command]
    prefix = "/home/u/virtuai/logs/vai-7.1.0"
    assert f"export VIRTUAI_SLURM_NATIVE=1 VIRTUAI_SLURM_LOG_PREFIX={prefix}" in script
    assert "export WORLD_SIZE" not in script  # per task: Slurm's srun sets its own
    assert "export MASTER_PORT=29500" in script
    # sbatch runs in the working directory: SLURM_SUBMIT_DIR is where the job runs.
    assert sbatch_command(req).endswith("&& cd /home/u/w && sbatch --parsable")


def test_a_native_checkpoint_signal_goes_to_the_batch_step() -> None:
    sent: list[str] = []

    class Recorder:
        def run(self, command: str, stdin: bytes | None = None) -> object:
            sent.append(command)
            return type("R", (), {"status": 0, "err": "", "out": "", "stdout": b""})()

    client = SlurmClient(Recorder(), "tok")  # type: ignore[arg-type]
    client.cancel("41", signal=10, batch=True)
    client.cancel("42", signal=10)
    client.read("/l/a.err", 0, 10, fallback="/l/a.batch.out")
    assert sent[:2] == ["scancel -b -s 10 41", "scancel -s 10 42"]
    assert '[ -e "$f" ] || f=/l/a.batch.out' in sent[2]


class SiteAnswers:
    """A transport answering squeue with nothing and sacct with the lines it is given."""

    def __init__(self) -> None:
        self.sacct = ""

    def run(self, command: str, stdin: bytes | None = None) -> object:
        out = self.sacct if command.startswith("sacct") else ""
        return type("R", (), {"status": 0, "err": "", "out": out, "stdout": out.encode()})()


ALLOCATION_FAILED = """\
21|FAILED|1:0|2026-12-06T01:12:08|2026-12-06T01:12:09|1|cpu=1,mem=100M|n1|None
21.batch|FAILED|1:0|2026-12-06T01:12:08|2026-12-06T01:12:09|1|cpu=1|n1|
"""


def test_a_failed_allocation_waits_for_its_steps_record_before_it_is_an_outcome(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The batch step ends when its srun returns; the OOM-killed step's own record can
    # reach accounting seconds later (3 s in one CI run): read early, it was "exit 1".
    site = SiteAnswers()
    driver = SlurmSiteDriver(
        SiteConfig(name="s", token="tok", pool="hpc"), SlurmClient(site, "tok")
    )  # type: ignore[arg-type]
    handle = {"slurm_id": "21"}
    site.sacct = ALLOCATION_FAILED + "21.0|RUNNING|0:0|2026-12-06T01:12:08|Unknown|1|cpu=1|n1|\n"
    driver.refresh(["21"])
    assert driver.observe(handle) is None
    site.sacct = (
        ALLOCATION_FAILED
        + "21.0|OUT_OF_MEMORY|0:125|2026-12-06T01:12:08|2026-12-06T01:12:12|4|cpu=1|n1|\n"
    )
    driver.refresh(["21"])
    result = driver.observe(handle)
    assert result is not None and result.outcome is TaskOutcome.KILLED_OOM
    # A step that never reports (its node died) holds the outcome only so long.
    monkeypatch.setattr(slurm_driver, "STEP_RECORD_WAIT_S", 0.0)
    site.sacct = (
        ALLOCATION_FAILED.replace("21", "22")
        + "22.0|RUNNING|0:0|2026-12-06T01:12:08|Unknown|1|cpu=1|n1|\n"
    )
    driver.refresh(["22"])
    stuck = driver.observe({"slurm_id": "22"})
    assert stuck is not None and (stuck.outcome, stuck.exit_code) == (TaskOutcome.EXITED, 1)
