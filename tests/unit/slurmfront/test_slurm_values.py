"""Slurm's value formats and option rules, case by case (sbatch 22.05's man page)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from virtuai.slurmfront import hostlist
from virtuai.slurmfront import values as v
from virtuai.slurmfront.options import OptionError, lookup_long, parse_words
from virtuai.slurmfront.resolve import Context, resolve, virtuai_dependency
from virtuai.slurmfront.script import ScriptError, scan, split_words

CTX = Context("job.sh", "/home/ada", "ada", {})


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30", 1800),
        ("0:30", 60),  # 30 s rounds up to a minute
        ("1:30", 120),
        ("1:00:00", 3600),
        ("2-0", 172800),
        ("2-12", 216000),
        ("1-2:30", 95400),
        ("1-02:03:04", 93840),
        ("1-", 86400),  # sbatch 22.05: TimeLimit=1-00:00:00
        ("0:90", 120),  # 90 s, as sbatch reads M:S
        ("UNLIMITED", v.UNLIMITED_TIME),
        ("0", v.UNLIMITED_TIME),
    ],
)
def test_slurm_times(text: str, seconds: int) -> None:
    assert v.time_seconds(text) == seconds


@pytest.mark.parametrize("text", ["1h", "1:2:3:4", "-5", "\u0661\u0660", "1.5", "", "1-:30"])
def test_bad_times(text: str) -> None:
    with pytest.raises(v.BadValue):
        v.time_seconds(text)


@pytest.mark.parametrize(
    ("text", "n_bytes"),
    [
        ("4096", 4096 * 2**20),
        ("4G", 4 * 2**30),
        ("4g", 4 * 2**30),
        ("16GB", 16 * 2**30),
        ("500M", 500 * 2**20),
        ("1T", 2**40),
        ("1024K", 2**20),
        ("1K", 2**20),  # rounded up to a MiB
        ("0", 0),
    ],
)
def test_slurm_memory_is_binary_and_bare_is_mib(text: str, n_bytes: int) -> None:
    assert v.memory_bytes(text) == n_bytes


@pytest.mark.parametrize("text", ["4.5G", "4Gi", "four", "\u0664G", "-1"])
def test_bad_memory(text: str) -> None:
    with pytest.raises(v.BadValue):
        v.memory_bytes(text)


def test_gres_forms() -> None:
    assert v.gres_gpus("gpu") == (v.GpuCount(1), [])
    assert v.gres_gpus("gpu:4") == (v.GpuCount(4), [])
    assert v.gres_gpus("gpu:a100:2") == (v.GpuCount(2, "a100"), [])
    assert v.gres_gpus("gres/gpu:3") == (v.GpuCount(3), [])
    assert v.gres_gpus("gpu:tesla") == (v.GpuCount(1, "tesla"), [])
    assert v.gres_gpus("gpu:2,nvme:1") == (v.GpuCount(2), ["nvme"])


def test_arrays() -> None:
    assert v.array_range("0-15:4%2") == v.ArrayRange((0, 4, 8, 12), 2)
    assert v.array_range("1,3,5-7") == v.ArrayRange((1, 3, 5, 6, 7), None)
    for bad in ("5-1", "a-b", "1-10:0", "1-\u0663"):
        with pytest.raises(v.BadValue):
            v.array_range(bad)


def test_dependencies() -> None:
    deps = v.dependencies("after:5+10,afterok:6_2")
    assert deps.terms == (
        v.DepTerm(v.DepKind.AFTER, "5", 10),
        v.DepTerm(v.DepKind.AFTER_OK, "6_2"),
    )
    assert v.dependencies("afterok:1?afterany:2").any_of
    for bad in ("afterok", "before:1", "afterok:1,afterany:2?afterok:3", "singleton:3"):
        with pytest.raises(v.BadValue):
            v.dependencies(bad)


def test_array_elements_and_aftercorr_reach_virtuai_and_aftercorr_on_an_element_does_not() -> None:
    script = "#!/bin/sh\n#SBATCH -d afterok:12_3:13,aftercorr:14\nrun\n"
    res = resolve(script, [], Context("t.sh", "/home/a", "a", {}))
    assert res.problems == []
    assert virtuai_dependency(res) == "afterok:12_3,afterok:13,aftercorr:14"
    odd = resolve(
        script.replace("aftercorr:14", "aftercorr:14_1"), [], Context("t.sh", "/", "a", {})
    )
    assert [p.kind for p in odd.problems] == ["unsupported"]
    assert "aftercorr on an array element (14_1)" in str(odd.problems[0])


def test_signals() -> None:
    assert v.signal_spec("B:USR1@120") == v.SignalSpec("USR1", 10, 120, True)
    assert v.signal_spec("SIGTERM") == v.SignalSpec("TERM", 15, 60, False)
    assert v.signal_spec("10@5").signal == "USR1"
    with pytest.raises(v.BadValue):
        v.signal_spec("NOPE@1")


def test_export_values_may_hold_commas() -> None:
    spec = v.export_spec("ALL,A=1,2,B=x")
    assert spec.all
    assert spec.values == (("A", "1,2"), ("B", "x"))
    assert v.export_spec("PATH,HOME") == v.ExportSpec(False, ("PATH", "HOME"), ())


def test_output_patterns() -> None:
    ctx = v.PatternContext(job_id=77, job_name="train", user="ada", node="lab-0")
    assert v.expand_pattern("%x-%j.out", ctx) == "train-77.out"
    assert v.expand_pattern("%A_%a %N %u %t %%", ctx) == "77_4294967294 lab-0 ada 0 %"
    assert v.expand_pattern("job%4j.out", ctx) == "job0077.out"
    arr = v.PatternContext(78, "a", "ada", None, array_job_id=70, array_index=3)
    assert v.expand_pattern("%A-%a-%j", arr) == "70-3-78"
    assert v.expand_pattern("lit\\%j", ctx) == "lit%j"
    assert v.expand_pattern("%j", v.PatternContext(None, "x", "u", None)) == "%j"


def test_hostlists() -> None:
    assert hostlist.compress(["lab-0", "lab-1", "lab-2", "lab-3"]) == "lab-[0-3]"
    assert hostlist.compress(["n1", "n3", "n4", "gpu7"]) == "n[1,3-4],gpu7"
    assert hostlist.expand("lab-[0-2],gpu[01-02]") == ["lab-0", "lab-1", "lab-2", "gpu01", "gpu02"]
    assert hostlist.compress(["node01", "node02"]) == "node[01-02]"
    assert hostlist.compress(["solo"]) == "solo"


@given(st.sets(st.integers(0, 500), min_size=1, max_size=40))
def test_hostlist_round_trip(numbers: set[int]) -> None:
    hosts = [f"lab-{n}" for n in sorted(numbers)]
    assert hostlist.expand(hostlist.compress(hosts)) == hosts


def test_words_are_split_as_sbatch_does() -> None:
    assert split_words(' --job-name="a b" -o x#y # c', 1) == ["--job-name=a b", "-o", "x"]
    # As in sbatch, a backslash escapes quotes and '#', but a blank still ends the word.
    assert split_words(r" --comment=a\"b\#c d", 1) == ['--comment=a"b#c', "d"]
    with pytest.raises(ScriptError):
        split_words(' --job-name="open', 3)


def test_directives_stop_at_the_first_command() -> None:
    found = scan("#!/bin/sh\n\n# c\n#SBATCH -n 2\nset -e\n#SBATCH -n 3\n")
    assert [d.line for d in found.directives] == [4]
    assert [d.line for d in found.ignored] == [6]
    assert found.first_command_line == 5


def test_long_options_take_unique_prefixes() -> None:
    assert lookup_long("job").long == "job-name"
    assert lookup_long("ntasks").long == "ntasks"
    with pytest.raises(OptionError, match="ambiguous"):
        lookup_long("cpus")


def test_parse_words_forms() -> None:
    settings, rest = parse_words(
        ["-n4", "-N", "2", "--mem=4G", "--time", "5", "x.sh", "-n9"], "cli"
    )
    assert [(s.option.long, s.value) for s in settings] == [
        ("ntasks", "4"),
        ("nodes", "2"),
        ("mem", "4G"),
        ("time", "5"),
    ]
    assert rest == ["x.sh", "-n9"]


def test_precedence_script_then_environment_then_command_line() -> None:
    script = "#!/bin/sh\n#SBATCH --time=10 --qos=low -J a\nrun\n"
    env = {"SBATCH_TIMELIMIT": "20", "SBATCH_QOS": "normal"}
    res = resolve(script, ["--qos=high"], Context("job.sh", "/w", "ada", env))
    assert res.time_limit_s == 1200
    assert res.qos == "high"
    assert res.name == "a"
    fates = [(d.origin, d.option, d.fate) for d in res.directives]
    assert ("script", "time", "overridden") in fates
    assert ("environment", "qos", "overridden") in fates
    assert ("command line", "qos", "used") in fates


def test_memory_options_are_mutually_exclusive_in_one_source() -> None:
    res = resolve("#!/bin/sh\n#SBATCH --mem=4G\n#SBATCH --mem-per-cpu=1G\n", [], CTX)
    assert [p.kind for p in res.problems] == ["invalid"]
    res = resolve("#!/bin/sh\n#SBATCH --mem=4G\n", ["--mem-per-cpu=1G", "-c", "2"], CTX)
    assert res.problems == []
    assert res.mem_per_node == 2 * 2**30


def test_wrap_makes_a_script() -> None:
    res = resolve("", ["--wrap", "echo hi", "-t", "5"], CTX)
    assert res.problems == []
    assert res.name == "wrap"
    assert res.time_limit_s == 300


def test_array_default_output_and_name_for_the_api() -> None:
    res = resolve("#!/bin/sh\n#SBATCH -a 0-3 -J 'My_Job.v2'\n", [], CTX)
    assert res.output == "/home/ada/slurm-%A_%a.out"
    assert res.api_name == "my-job-v2"


def test_chdir_is_relative_to_the_submit_dir() -> None:
    res = resolve("#!/bin/sh\n#SBATCH -D sub/dir -o none\n", [], CTX)
    assert res.workdir == "/home/ada/sub/dir"
    assert res.output == "/dev/null"


def test_what_slurm_takes_but_virtuai_cannot_is_unsupported_not_invalid() -> None:
    res = resolve("#!/bin/sh\n#SBATCH -C 'skylake|cascade'\n#SBATCH --signal=R:USR1\n", [], CTX)
    assert [(p.kind, p.line) for p in res.problems] == [("unsupported", 2), ("unsupported", 3)]
    assert v.array_range("[0-3]").indices == (0, 1, 2, 3)


def test_output_paths_are_normalised() -> None:
    res = resolve("#!/bin/sh\n#SBATCH -D ../x -o ./logs/../out.%j\n", [], CTX)
    assert (res.workdir, res.output) == ("/home/x", "/home/x/out.%j")
