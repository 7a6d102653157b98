"""sbatch's option table against Slurm 22.05's own, and the spellings real scripts use."""

from __future__ import annotations

import pytest

from virtuai.slurmfront.options import BY_LONG, LONG_ALIASES, OptionError, Support, lookup_long
from virtuai.slurmfront.resolve import Context, resolve

# Every long option Debian's sbatch 22.05 takes, as its getopt_long lists them when a
# prefix is ambiguous (`sbatch --a=1` ... `sbatch --z=1`).
SBATCH_22_05 = set(
    [
        "account",
        "acctg-freq",
        "array",
        "batch",
        "bb",
        "bbf",
        "begin",
        "chdir",
        "cluster",
        "cluster-constraint",
        "clusters",
        "comment",
        "constraint",
        "container",
        "context",
        "contiguous",
        "core-spec",
        "cores-per-socket",
        "cpu-freq",
        "cpus-per-gpu",
        "cpus-per-task",
        "deadline",
        "delay-boot",
        "dependency",
        "distribution",
        "error",
        "exclude",
        "exclusive",
        "export",
        "export-file",
        "extra-node-info",
        "get-user-env",
        "gid",
        "gpu-bind",
        "gpu-freq",
        "gpus",
        "gpus-per-node",
        "gpus-per-socket",
        "gpus-per-task",
        "gres",
        "gres-flags",
        "help",
        "hint",
        "hold",
        "ignore-pbs",
        "input",
        "job-name",
        "kill-on-invalid-dep",
        "licenses",
        "mail-type",
        "mail-user",
        "mcs-label",
        "mem",
        "mem-bind",
        "mem-per-cpu",
        "mem-per-gpu",
        "mincpus",
        "network",
        "nice",
        "no-kill",
        "no-requeue",
        "nodefile",
        "nodelist",
        "nodes",
        "ntasks",
        "ntasks-per-core",
        "ntasks-per-gpu",
        "ntasks-per-node",
        "ntasks-per-socket",
        "ntasks-per-tres",
        "open-mode",
        "output",
        "overcommit",
        "oversubscribe",
        "parsable",
        "partition",
        "power",
        "prefer",
        "priority",
        "profile",
        "propagate",
        "qos",
        "quiet",
        "reboot",
        "requeue",
        "reservation",
        "signal",
        "sockets-per-node",
        "spread-job",
        "switches",
        "tasks-per-node",
        "test-only",
        "thread-spec",
        "threads-per-core",
        "time",
        "time-min",
        "tmp",
        "uid",
        "usage",
        "use-min-nodes",
        "verbose",
        "version",
        "wait",
        "wait-all-nodes",
        "wckey",
        "wrap",
    ]
)
# Built into upstream sbatch only with X11 support; refused here either way.
OPTIONAL_BUILDS = {"x11"}


def test_the_table_is_sbatchs_own() -> None:
    ours = set(BY_LONG) | set(LONG_ALIASES)
    assert ours - OPTIONAL_BUILDS == SBATCH_22_05


def test_aliases_and_their_prefixes_name_one_option() -> None:
    assert lookup_long("tasks-per-node").long == "ntasks-per-node"
    # --tasks is a prefix of --tasks-per-node only: sbatch reads it as that.
    assert lookup_long("tasks").long == "ntasks-per-node"
    assert lookup_long("cluster").long == "clusters"
    with pytest.raises(OptionError, match=r"ambiguous: .*--cluster-constraint"):
        lookup_long("clust")


@pytest.mark.parametrize(
    ("name", "hint"),
    [("workdir", "--chdir"), ("immediate", "salloc and srun"), ("pty", "srun")],
)
def test_options_sbatch_lacks_say_what_instead(name: str, hint: str) -> None:
    with pytest.raises(OptionError, match=f"not an sbatch option.*{hint}"):
        lookup_long(name)


def test_placement_hints_are_accepted_with_a_note() -> None:
    for name in ("gres-flags", "switches", "context"):
        assert BY_LONG[name].support is Support.NOTE


def test_tasks_per_node_alias_sets_the_task_count() -> None:
    res = resolve(
        "#!/bin/bash\n#SBATCH -N 2 --tasks-per-node=3\nsrun true\n",
        [],
        Context("job.sh", "/home/ada", "ada"),
    )
    assert (res.nodes, res.ntasks, res.ntasks_per_node, res.problems) == (2, 6, 3, [])
    assert [(d.text, d.option) for d in res.directives][1] == (
        "--tasks-per-node=3",
        "ntasks-per-node",
    )


def test_a_comma_in_a_constraint_means_all_as_slurm_stores_it() -> None:
    # sbatch 22.05 on nodes with features blade,ib: `-C blade,ib` is Features=blade&ib.
    res = resolve("#!/bin/bash\n#SBATCH -C a,b&c\ntrue\n", [], Context("j", "/h", "ada"))
    assert (res.constraints, res.problems) == (["a", "b", "c"], [])


def test_an_open_node_range_is_refused_as_sbatch_does() -> None:
    res = resolve("#!/bin/bash\n#SBATCH -N 2-\ntrue\n", [], Context("j", "/h", "ada"))
    assert [(p.kind, p.line) for p in res.problems] == [("invalid", 2)]
    assert "maximum is missing" in res.problems[0].reason


def test_a_directive_on_the_shebang_line_is_noted_not_read() -> None:
    res = resolve("#!/bin/bash #SBATCH -p gpu\ntrue\n", [], Context("j", "/h", "ada"))
    assert res.partitions == []
    assert any("#! line holds a directive" in note for note in res.notes)


def test_lookalike_dashes_are_named_in_the_problem() -> None:
    res = resolve("#!/bin/bash\n#SBATCH \u2014time=5\ntrue\n", [], Context("j", "/h", "ada"))
    assert [(p.kind, p.line) for p in res.problems] == [("unknown", 2)]
    assert "U+2014" in res.problems[0].reason
    assert "retype the dashes" in res.problems[0].reason


def test_a_missing_value_names_what_slurm_would_take_instead() -> None:
    text = "#!/bin/bash\n#SBATCH --mail-user\n#SBATCH --mail-type=ALL\ntrue\n"
    res = resolve(text, [], Context("j", "/h", "ada"))
    assert [(p.kind, p.line) for p in res.problems] == [("unknown", 2)]
    assert "line 3's '--mail-type=ALL'" in res.problems[0].reason


@pytest.mark.parametrize(
    ("directives", "ntasks", "gpus_per_task"),
    [
        # What sbatch 22.05 gave on the dev cluster (NumTasks), for each form.
        ("-N 1 --gpus-per-node=2 --ntasks-per-gpu=1", 2, 1),
        ("--gpus=2 --ntasks-per-gpu=2", 4, None),
        ("--gres=gpu:2 --ntasks-per-tres=1", 2, 1),
        ("-n 2 --gpus-per-node=2 --ntasks-per-gpu=1", 2, 1),
    ],
)
def test_tasks_per_gpu_count_tasks_from_the_gpus(
    directives: str, ntasks: int, gpus_per_task: int | None
) -> None:
    res = resolve(f"#!/bin/bash\n#SBATCH {directives}\ntrue\n", [], Context("j", "/h", "ada"))
    assert (res.ntasks, res.gpus_per_task, res.problems) == (ntasks, gpus_per_task, [])


def test_tasks_per_gpu_without_gpus_is_invalid() -> None:
    res = resolve("#!/bin/bash\n#SBATCH --ntasks-per-gpu=1\ntrue\n", [], Context("j", "/h", "ada"))
    assert [(p.kind, p.line) for p in res.problems] == [("invalid", 2)]


def test_a_byte_order_mark_is_named() -> None:
    res = resolve("\ufeff#!/bin/bash\ntrue\n", [], Context("j", "/h", "ada"))
    assert [(p.kind, p.line) for p in res.problems] == [("invalid", 1)]
    assert "byte-order mark" in res.problems[0].reason
