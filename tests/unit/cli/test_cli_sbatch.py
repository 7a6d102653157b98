"""`virtuai sbatch`: the corpus through `--test-only --json`, server checks, and what is sent."""

from __future__ import annotations

import base64
import json
import zlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_fakes import FakeApi, FakeClock, job, run

JOBS = "/api/v1/jobs"
CORPUS = Path(__file__).parents[1] / "slurmfront" / "corpus"
EXPECTED: dict[str, dict[str, Any]] = yaml.safe_load((CORPUS / "expected.yaml").read_text())
NODES = [
    {
        "name": "lab-0",
        "site": "local",
        "pool": "gpu",
        "capacity": {"cpu": 64, "memory": 256 * 2**30, "gpu": 8},
        "allocated": {"cpu": 0, "memory": 0, "gpu": 0},
        "gpus": [],
        "updated_at": "2026-05-01T10:00:00Z",
    }
]
PLAN_OK = {
    "can_ever_run": True,
    "starts_now": True,
    "reason": None,
    "kind": None,
    "queue_position": None,
    "expected_start": None,
    "placement": [],
    "preempts": 0,
}


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No server listens (port 9 is discard); the submit directory is a fresh one."""
    monkeypatch.setenv("VIRTUAI_URL", "http://127.0.0.1:9")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def lab(api: FakeApi, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeApi:
    monkeypatch.chdir(tmp_path)
    api.on("GET", "/api/v1/nodes", NODES)
    api.on("POST", f"{JOBS}/plan", PLAN_OK)
    api.on("POST", JOBS, job(id=42, array_id=None), status=201)
    return api


def script(tmp: Path, text: str, name: str = "job.sh") -> str:
    path = tmp / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_resolves_offline(name: str, offline: Path) -> None:
    expected = dict(EXPECTED[name])
    result = run(["sbatch", "--test-only", "--json", str(CORPUS / name)])
    answer = json.loads(result.stdout)
    problems = expected.pop("problems")
    expected.pop("fates", None)
    assert result.exit_code == (1 if problems else 0), result.output
    assert len(answer["would_not_run"]) == len(problems)
    assert answer["server_checked"] is False
    assert any("not checked against a server" in note for note in answer["notes"])
    for key, value in expected.items():
        want = value.replace("/home/ada/run", str(offline)) if isinstance(value, str) else value
        assert answer[key] == want, key


def test_human_test_only_lists_directives_and_submits_nothing(lab: FakeApi, tmp_path: Path) -> None:
    path = script(tmp_path, "#!/bin/bash\n#SBATCH -J demo --mem=2G\n#SBATCH --mail-type=END\nrun\n")
    result = run(["sbatch", "--test-only", path])
    assert result.exit_code == 0, result.output
    assert "Memory per node: 2Gi" in result.stdout
    assert "--mail-type=END" in result.stdout and "accepted" in result.stdout
    assert "Job would be submitted" in result.stdout
    assert lab.sent("POST", JOBS) == []


def test_server_checks_fill_would_not_run(lab: FakeApi, tmp_path: Path) -> None:
    lab.on("POST", f"{JOBS}/plan", {**PLAN_OK, "can_ever_run": False, "reason": "too big"})
    path = script(tmp_path, "#!/bin/bash\n#SBATCH -p nowhere -t 5\nrun\n")
    result = run(["sbatch", "--test-only", "--json", path])
    answer = json.loads(result.stdout)
    assert result.exit_code == 1
    assert answer["server_checked"] is True
    assert answer["would_not_run"] == [
        "partition 'nowhere' is no pool or site here (there are: gpu, local)"
    ]
    result = run(["sbatch", "--test-only", "--json", "-p", "gpu", path])
    assert json.loads(result.stdout)["would_not_run"] == ["too big"]
    assert json.loads(result.stdout)["pool"] == "gpu"
    result = run(["sbatch", "--test-only", "--json", "-p", "local", path])
    assert (json.loads(result.stdout)["site"], json.loads(result.stdout)["pool"]) == ("local", None)
    assert result.exit_code == 1


def test_submit_sends_the_batch_step(lab: FakeApi, tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("MY_SETTING", "on")
    text = (
        "#!/bin/bash\n#SBATCH --job-name=Train_1 -c 4 --mem=8G --gres=gpu:2\n"
        "#SBATCH -t 1:00:00 -a 0-3%2 -d afterok:5 --signal=B:USR1@90 --qos=high\nrun\n"
    )
    path = script(tmp_path, text)
    result = run(["sbatch", path, "arg1"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "Submitted batch job 42\n"
    assert "memory follows Slurm here" in result.stderr
    (request,) = lab.sent("POST", JOBS)
    body = request.body
    assert body["name"] == "train-1"
    assert body["resources"] == {"cpu": 4, "memory": 8 * 2**30, "gpu": 2}
    assert (body["tasks"], body["time"], body["priority"]) == (1, 3600, "high")
    assert (body["array"], body["dependency"], body["signal"]) == ("0-3%2", "afterok:5", "10@90")
    assert body["workdir"] == str(tmp_path)
    assert body["command"][:2] == ["/usr/bin/python3", "-c"]
    assert body["command"][3:] == ["batch", body["command"][4], text, "arg1"]
    config = json.loads(body["command"][4])
    assert config["output"] == "slurm-%A_%a.out" and config["array"] == [0, 1, 2, 3]
    assert config["signal"] == {"number": 10, "seconds": 90, "batch_only": True}
    assert body["env"]["MY_SETTING"] == "on"
    assert "VIRTUAI_TOKEN" not in body["env"] and "HOME" not in body["env"]
    runner = zlib.decompress(base64.b64decode(body["env"]["VIRTUAI_SLURM_RUNNER"])).decode()
    assert "def slurm_environment" in runner
    # The Slurm site mode: +0.3 KiB; MPI steps (slurmrun/mpi.py): +3 KiB.
    assert len(body["env"]["VIRTUAI_SLURM_RUNNER"]) < 16_000
    assert "constraints" not in body


def test_parsable_and_constraints(lab: FakeApi, tmp_path: Path) -> None:
    path = script(tmp_path, "#!/bin/sh\n#SBATCH -C 'a100&nvlink'\nrun\n")
    result = run(["sbatch", "--parsable", path])
    assert result.stdout == "42\n"
    (request,) = lab.sent("POST", JOBS)
    assert request.body["constraints"] == ["a100", "nvlink"]


def test_unsupported_directives_refuse_unless_ignored(lab: FakeApi, tmp_path: Path) -> None:
    path = script(tmp_path, "#!/bin/sh\n#SBATCH -t 5\n#SBATCH --nodelist=n[1-2]\nrun\n")
    result = run(["sbatch", path])
    assert result.exit_code == 1
    assert "line 3: --nodelist" in result.stderr
    assert lab.sent("POST", JOBS) == []
    result = run(["sbatch", "--ignore-unsupported", path])
    assert result.exit_code == 0, result.output
    assert "warning: line 3: --nodelist" in result.stderr
    assert len(lab.sent("POST", JOBS)) == 1


def test_invalid_values_refuse_even_with_ignore(lab: FakeApi, tmp_path: Path) -> None:
    path = script(tmp_path, "#!/bin/sh\n#SBATCH -t soon\nrun\n")
    result = run(["sbatch", "--ignore-unsupported", path])
    assert result.exit_code == 1
    assert "line 2: --time: cannot read 'soon'" in result.stderr


def test_command_line_and_environment_override(
    lab: FakeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SBATCH_TIMELIMIT", "20")
    monkeypatch.setenv("SBATCH_PARTITION", "gpu")
    path = script(tmp_path, "#!/bin/sh\n#SBATCH -t 5 -c 2\nrun\n")
    answer = json.loads(run(["sbatch", "--test-only", "--json", "-c", "3", path]).stdout)
    assert (answer["time_limit_s"], answer["cpus_per_task"], answer["pool"]) == (1200, 3, "gpu")


def test_wrap_and_unknown_command_line_option(lab: FakeApi) -> None:
    result = run(["sbatch", "--parsable", "--wrap", "echo hi"])
    assert result.exit_code == 0, result.output
    (request,) = lab.sent("POST", JOBS)
    assert "echo hi" in request.body["command"][5]
    bad = run(["sbatch", "--bogus", "x.sh"])
    assert bad.exit_code == 2 and "--bogus is not an sbatch option" in bad.stderr


def test_wait_exits_with_the_jobs_code(lab: FakeApi, tmp_path: Path) -> None:
    lab.on(
        "GET", f"{JOBS}/42", job(id=42, state="running"), job(id=42, state="failed", exit_code=3)
    )
    path = script(tmp_path, "#!/bin/sh\nexit 3\n")
    result = run(["sbatch", "--wait", path], clock=FakeClock())
    assert result.exit_code == 3, result.output
    assert result.stdout == "Submitted batch job 42\n"


def test_missing_script(offline: Path) -> None:
    result = run(["sbatch", "nope.sh"])
    assert result.exit_code == 2
    assert "Unable to open file nope.sh" in result.stderr


def test_help_and_json_at_submit(lab: FakeApi, tmp_path: Path) -> None:
    shown = run(["sbatch", "-h"])
    assert shown.exit_code == 0 and "--test-only" in shown.stdout
    path = script(tmp_path, "#!/bin/sh\n#SBATCH -t 5\nrun\n")
    result = run(["sbatch", "--json", path])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["id"] == 42


def test_srun_outside_a_job_submits_a_step_waits_and_prints(lab: FakeApi) -> None:
    lab.on("GET", f"{JOBS}/42", job(id=42, state="succeeded", exit_code=0))
    lab.on("GET", f"{JOBS}/42/logs", {"data": "0: hello\n", "offset": 9, "eof": True})
    result = run(["srun", "-n", "2", "-l", "-t", "5", "echo", "hello"], clock=FakeClock())
    assert result.exit_code == 0, result.output
    assert "0: hello" in result.stdout
    (request,) = lab.sent("POST", JOBS)
    body = request.body
    assert body["name"] == "echo" and body["time"] == 300
    assert body["command"][5] == "#!/bin/sh\nexec srun -l echo hello\n"
    config = json.loads(body["command"][4])
    assert (config["ntasks"], config["output"]) == (2, "")


def test_multi_node_singleton_any_of_and_a_virtual_cluster(lab: FakeApi, tmp_path: Path) -> None:
    text = (
        "#!/bin/bash\n#SBATCH -N 2 --ntasks-per-node=4 -c 2 --mem=1G\n#SBATCH -d singleton\nrun\n"
    )
    path = script(tmp_path, text)
    result = run(["sbatch", "--vc", "lab", "-d", "afterok:5?after:6+2", path, "--vc", "x"])
    assert result.exit_code == 0, result.output
    assert "in virtual cluster lab" in result.stderr
    (request,) = lab.sent("POST", JOBS)
    body = request.body
    assert (body["tasks"], body["vc"], body["dependency"]) == (2, "lab", "afterok:5?after:6+2")
    assert body["resources"] == {"cpu": 8, "memory": 2**30, "gpu": 0}
    assert "workdir" not in body  # the cluster's /shared
    assert body["command"][-2:] == ["--vc", "x"]  # the script's own arguments stay
    runner = zlib.decompress(base64.b64decode(body["env"]["VIRTUAI_SLURM_RUNNER"])).decode()
    assert "virtuai_stepnet" in runner  # the step agents travel with multi-node jobs only
    assert len(body["env"]["VIRTUAI_SLURM_STEP_KEY"]) == 64  # what its nodes prove
    refused = run(["sbatch", "--vc", "lab", "-p", "gpu", path])
    assert refused.exit_code == 2 and "--vc and -p/--partition" in refused.stderr


def test_a_sites_partition_pins_the_job_there_and_runs_it_in_the_sites_workspace() -> None:
    """``-p hpc:gpu`` is a site's pool: the job goes to that site, where the submit
    directory is not, so it runs in the tenant's workspace there (unless -D names one)."""
    from virtuai.cli.slurmjob import job_body
    from virtuai.slurmfront.resolve import Context, resolve

    script = "#!/bin/bash\n#SBATCH -p hpc:gpu\n#SBATCH -t 5\nsrun hostname\n"
    res = resolve(script, [], Context("s.sh", "/home/alice/exp", "alice", {}))
    body, notes = job_body(
        res, script, env={}, submit_dir="/home/alice/exp", submit_host="login",
        user="alice", local=True,
    )  # fmt: skip
    assert body["site"] == "hpc" and "workdir" not in body
    assert any("on site hpc" in note for note in notes)
    given = resolve(script, ["-D", "/scratch/alice"], Context("s.sh", "/x", "alice", {}))
    body, _ = job_body(
        given, script, env={}, submit_dir="/x", submit_host="login", user="alice", local=True
    )
    assert body["site"] == "hpc" and body["workdir"] == "/scratch/alice"
    local = resolve(script.replace("hpc:gpu", "gpu"), [], Context("s.sh", "/x", "a", {}))
    body, _ = job_body(
        local, script, env={}, submit_dir="/x", submit_host="h", user="a", local=True
    )
    assert "site" not in body and body["workdir"] == "/x"
