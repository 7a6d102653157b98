"""``virtuai submit`` (a job from the command line) and ``virtuai apply -f`` (from YAML).

Both print only the new job's id, so that ``id=$(virtuai submit -- sleep 1)``
works, or with ``--json`` the job as the API returned it.  Values are checked
here for a fast, clear error, then sent as typed; the server checks them again.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from yaml.nodes import MappingNode, ScalarNode

from virtuai.cli import output, services, validate
from virtuai.cli.client import Client, JsonObject
from virtuai.cli.output import JsonFlag
from virtuai.domain.arrays import parse_array
from virtuai.domain.dependencies import parse_dependencies
from virtuai.domain.tenancy import validate_name
from virtuai.domain.units import parse_cpu, parse_duration, parse_memory, parse_signal_spec
from virtuai.errors import InvalidRequest

JOBS = "/api/v1/jobs"
SHELL = "/bin/sh"
# ``submit``'s options end at the first word of the command: `submit python -c x --tasks 3`
# runs `python -c x --tasks 3`, as `--` would.
SUBMIT_CONTEXT = {"allow_interspersed_args": False}
SPEC_KEYS = (
    "type",
    "tenant",
    "name",
    "command",
    "resources",
    "tasks",
    "time",
    "priority",
    "env",
    "workdir",
    "array",
    "dependency",
    "signal",
    "requeue",
    "vc",
    "node_class",
    "constraints",
    "site",
    "environment",
    "image",
    "data",
    "stage",
)
RESOURCE_KEYS = ("cpu", "memory", "gpu")
MAX_BULK = 1000  # as the API's MAX_BULK_JOBS
_TYPE_NAMES = {str: "text", int: "a whole number", float: "a number"}


def register(app: typer.Typer, panel: str) -> None:
    app.command("submit", context_settings=SUBMIT_CONTEXT, rich_help_panel=panel)(submit)
    app.command("apply", rich_help_panel=panel)(apply)
    app.command("plan", rich_help_panel=panel)(plan)


def submit(
    *,
    command: Annotated[
        list[str],
        typer.Argument(
            help="The command and its arguments, best after `--`.",
            metavar="COMMAND",
            show_default=False,
        ),
    ],
    tenant: Annotated[
        str | None, typer.Option(help="Tenant to run in; default: your only one.")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Job name (a DNS label).")] = None,
    cpu: Annotated[
        str | None, typer.Option(help="CPUs per task: 2, 0.5, 500m.  [default: 1]")
    ] = None,
    memory: Annotated[
        str | None, typer.Option(help="Memory per task: 512Mi, 4Gi.  [default: 1Gi]")
    ] = None,
    gpu: Annotated[int, typer.Option(help="GPUs per task.", min=0)] = 0,
    tasks: Annotated[
        int | None, typer.Option(help="Tasks, started all together.  [default: 1]", min=1)
    ] = None,
    time: Annotated[
        str,
        typer.Option("--time", "-t", help="Time limit: 30 (minutes), 1:30:00, 2-00:00:00, 2h."),
    ] = "1h",
    priority: Annotated[str, typer.Option(help="Priority class: low, normal, high.")] = "normal",
    env: Annotated[
        list[str] | None,
        typer.Option(
            "--env",
            help="Environment variable (NAME=VALUE), repeatable; or, without '=', the name of "
            "a Python environment to run in (as --environment).",
            metavar="NAME=VALUE|ENV",
        ),
    ] = None,
    environment: Annotated[
        str | None,
        typer.Option(help="A ready Python environment of the tenant (`virtuai env list`)."),
    ] = None,
    workdir: Annotated[
        str | None, typer.Option(help="Working directory; a relative one is from here.")
    ] = None,
    image: Annotated[
        str | None,
        typer.Option(help="Run in a sandbox over this image's root (`virtuai image list`)."),
    ] = None,
    array: Annotated[
        str | None,
        typer.Option("--array", "-a", help="Job array: 0-99, 1,3,5-7, 0-15:4; %N runs N at once."),
    ] = None,
    dependency: Annotated[
        str | None,
        typer.Option(
            "--dependency", "-d", help="afterok:ID[:ID...], afterany:ID, afternotok:ID; commas."
        ),
    ] = None,
    checkpoint_signal: Annotated[
        str | None,
        typer.Option(
            "--signal", help="On preemption: this signal, then SIGKILL after SECONDS (USR1@60)."
        ),
    ] = None,
    requeue: Annotated[
        bool, typer.Option(help="After preemption, requeue (default) or end as preempted.")
    ] = True,
    vc: Annotated[
        str | None,
        typer.Option(
            "--vc",
            help="Run in this virtual cluster: by default one task per node, each a whole node.",
        ),
    ] = None,
    node_class: Annotated[
        str | None, typer.Option("--class", help="Run only on nodes of this class: light|fat|gpu.")
    ] = None,
    constraint: Annotated[
        list[str] | None,
        typer.Option(help="A node label the job needs: key=value or a name (repeatable)."),
    ] = None,
    site: Annotated[
        str | None,
        typer.Option(
            "--site",
            help="Run on this site (a Slurm cluster; `virtuai site list`), or `any`.",
        ),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(
            "--data", help="A dataset of the tenant (`virtuai dataset list`): run where it is."
        ),
    ] = None,
    stage: Annotated[
        bool,
        typer.Option(
            "--stage", help="With --data: copy it (rsync) to the site the job runs at first."
        ),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Submit a job; print its id.

    Options go before the command: everything from the command's first word
    on is the command, e.g. `virtuai submit --tasks 2 -- python -c 'print(1)'`.

    With --vc the job's tasks run inside the cluster's nodes (in /shared by
    default), with VIRTUAI_HOSTFILE listing the nodes and MASTER_ADDR node 0's
    address; it holds nothing of your quota beyond the cluster's.
    """
    if tenant is not None:
        validate.name(tenant, "--tenant")
    if name is not None:
        validate.name(name, "--name")
    if vc is not None:
        validate.name(vc, "--vc")
    whole_nodes = vc is not None and cpu is None and memory is None and gpu == 0
    spec: JsonObject = {
        "type": "job",
        "tenant": tenant,
        "name": name,
        "command": list(command),
        "resources": None
        if whole_nodes
        else {
            "cpu": validate.cpu(cpu or "1"),
            "memory": validate.memory(memory or "1Gi"),
            "gpu": gpu,
        },
        "tasks": tasks if tasks is not None or vc is not None else 1,
        "vc": vc,
        "time": validate.duration(time),
        "priority": priority,
        "env": validate.env_pairs([e for e in env or [] if "=" in e]),
        "workdir": absolute(workdir),
        "array": _checked_option(array, "--array", parse_array),
        "dependency": _checked_option(dependency, "--dependency", parse_dependencies),
        "signal": _checked_option(checkpoint_signal, "--signal", parse_signal_spec),
        "requeue": requeue,
    }
    names = [e for e in env or [] if "=" not in e]
    if len(names) > 1 or (names and environment is not None and names[0] != environment):
        raise typer.BadParameter("name at most one Python environment", param_hint="--env")
    if names or environment is not None:
        spec["environment"] = validate.name(environment or names[0], "--environment")
    if node_class is not None:
        spec["node_class"] = node_class
    if constraint:
        spec["constraints"] = list(constraint)
    if site is not None:
        spec["site"] = site
    if image is not None:
        spec["image"] = validate.name(image, "--image")
    if stage and data is None:
        raise typer.BadParameter("--stage copies the job's data: give --data too")
    if data is not None:
        spec["data"] = validate.name(data, "--data")
        spec["stage"] = stage
    _create(spec, as_json)


def _checked_option(value: str | None, option: str, parse: Callable[[str], object]) -> str | None:
    if value is not None:
        try:
            parse(value)
        except InvalidRequest as exc:
            message = exc.message.removeprefix(f"{exc.field}: ") if exc.field else exc.message
            raise typer.BadParameter(message, param_hint=option) from None
    return value


def apply(
    file: Annotated[
        str, typer.Option("--file", "-f", help="YAML spec (type: job or service); - reads stdin.")
    ],
    as_json: JsonFlag = False,
) -> None:
    """Submit the job(s) described in a YAML file; print their ids, one per line.

    Several jobs (documents separated by `---`, or one list of job specs) go in
    one request and one transaction: all are submitted, or none.  For sweeps of
    the same command, `submit --array` is one request too.  A `type: service`
    document creates or changes that service (see `virtuai service`).
    """
    specs = load_specs(file)
    if any(isinstance(doc, dict) and doc.get("type") == "service" for doc in specs):
        _apply_each(specs, file, as_json)
        return
    if len(specs) == 1 and not isinstance(specs[0], list):
        _create(job_from_spec(specs[0], file), as_json)
        return
    flat = [spec for doc in specs for spec in (doc if isinstance(doc, list) else [doc])]
    if not flat:
        raise _bad(file, "the list of jobs is empty")
    if len(flat) > MAX_BULK:
        raise _bad(file, f"{len(flat)} jobs: at most {MAX_BULK} go in one request")
    bodies = []
    for index, spec in enumerate(flat):
        try:
            bodies.append(job_from_spec(spec, file))
        except typer.BadParameter as exc:
            raise _bad(file, f"job {index}: {exc.message.split(': ', 1)[-1]}") from None
    with Client.from_environment() as client:
        jobs = client.post_list(f"{JOBS}/bulk", {"jobs": bodies})
    if as_json:
        output.print_json(jobs)
    else:
        for job in jobs:
            typer.echo(str(job.get("id", "")))


def _apply_each(specs: list[Any], file: str, as_json: bool) -> None:
    """Documents with services: each is applied on its own (a service is changed in place,
    not created with the jobs in one transaction).  A service prints its URL."""
    bodies: list[tuple[str, JsonObject]] = []
    for index, spec in enumerate(specs):
        where = "" if len(specs) == 1 else f"document {index}: "
        if isinstance(spec, dict) and spec.get("type") == "service":
            bodies.append(
                (
                    "service",
                    services.service_body(spec, _problem(file, where)),
                )
            )
        else:
            try:
                bodies.append(("job", job_from_spec(spec, file)))
            except typer.BadParameter as exc:
                raise _bad(file, where + exc.message.split(": ", 1)[-1]) from None
    results = []
    with Client.from_environment() as client:
        for kind, body in bodies:
            if kind == "service":
                results.append(services.apply_service(client, body))
            else:
                results.append(client.post_object(JOBS, body))
    if as_json:
        output.print_json(results if len(results) > 1 else results[0])
        return
    for (kind, _body), result in zip(bodies, results, strict=True):
        if kind == "service":
            what = (
                "created"
                if result.get("created")
                else "rolling"
                if result.get("rolled")
                else "updated"
            )
            typer.echo(f"service {result.get('name')} {what}: {result.get('url')}")
        else:
            typer.echo(str(result.get("id", "")))


def _problem(file: str, where: str) -> Callable[[str], typer.BadParameter]:
    return lambda message: _bad(file, where + message)


def plan(
    file: Annotated[
        str, typer.Option("--file", "-f", help="YAML spec (type: job); - reads stdin.")
    ],
    as_json: JsonFlag = False,
) -> None:
    """What would happen to this job if it were submitted now; nothing is submitted.

    Can it ever run, would it start now and where, or what would it wait for,
    its place in the queue and when it should start.
    """
    body = job_from_spec(load_spec(file), file)
    with Client.from_environment() as client:
        answer = client.post_object(f"{JOBS}/plan", body)
    if as_json:
        output.print_json(answer)
        return
    if not answer.get("can_ever_run"):
        output.print_fields([("Can run", "never"), ("Why", str(answer.get("reason") or ""))])
        raise typer.Exit(1)
    placement = ", ".join(
        f"task {p.get('index')} on {p.get('node')}"
        + (
            f" (GPUs {','.join(str(g) for g in p.get('gpu_indices') or [])})"
            if p.get("gpu_indices")
            else ""
        )
        for p in answer.get("placement") or []
    )
    output.print_fields(
        [
            ("Starts now", "yes" if answer.get("starts_now") else "no"),
            ("Placement", placement or output.NONE),
            ("Waits for", str(answer.get("reason") or output.NONE)),
            ("Queue position", output.count(answer.get("queue_position"))),
            ("Expected start", output.timestamp(answer.get("expected_start"))),
            ("Would preempt", f"{answer.get('preempts', 0)} job(s)"),
            ("Runs at", str(answer.get("site") or "this platform's nodes")),
            ("Because", str(answer.get("site_reason") or output.NONE)),
        ]
    )
    candidates = [c for c in answer.get("candidates") or [] if isinstance(c, dict)]
    if candidates:
        output.print_table(
            ["PLACE", "FEASIBLE", "EXPECTED WAIT", "WHY"],
            [
                [
                    str(c.get("site")),
                    "yes" if c.get("feasible") else "no",
                    output.NONE
                    if c.get("expected_wait_s") is None
                    else f"{c['expected_wait_s']} s",
                    str(c.get("why", "")),
                ]
                for c in candidates
            ],
        )


def _seconds(value: object) -> str:
    return f"{value} s" if isinstance(value, int) else output.NONE


def _create(spec: JsonObject, as_json: bool) -> None:
    body = {key: value for key, value in spec.items() if value is not None}
    with Client.from_environment() as client:
        job = client.post_object(JOBS, body)
    if as_json:
        output.print_json(job)
    else:
        typer.echo(str(job.get("id", "")))


def absolute(workdir: str | None) -> str | None:
    return None if workdir is None else os.path.abspath(workdir)


# The YAML spec ---------------------------------------------------------------


class SpecLoader(yaml.SafeLoader):
    """Safe YAML read as YAML 1.2 on two points, so that text stays text.

    ``1:30:00`` is a Slurm time, not YAML 1.1's base-60 number 5400 (which would
    then be taken as seconds); ``yes``, ``no``, ``on``, ``off`` are words, not
    booleans (``command: [echo, yes]``).

    A key given twice is an error, not the last one silently winning: a spec that
    says ``time:`` twice was most likely edited in one place and not the other.
    """

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                    )
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


def _clock_text_or_number(loader: SpecLoader, node: ScalarNode) -> Any:
    text = loader.construct_scalar(node)
    if ":" in text:
        return text
    if node.tag.endswith(":int"):
        return loader.construct_yaml_int(node)
    return loader.construct_yaml_float(node)


def _bool_or_word(loader: SpecLoader, node: ScalarNode) -> Any:
    text = loader.construct_scalar(node)
    if text.lower() in ("true", "false"):
        return loader.construct_yaml_bool(node)
    return text


SpecLoader.add_constructor("tag:yaml.org,2002:bool", _bool_or_word)
SpecLoader.add_constructor("tag:yaml.org,2002:int", _clock_text_or_number)
SpecLoader.add_constructor("tag:yaml.org,2002:float", _clock_text_or_number)


def load_spec(file: str) -> Any:
    documents = load_specs(file)
    if len(documents) != 1:
        raise _bad(file, f"expected one YAML document, found {len(documents)}")
    return documents[0]


def load_specs(file: str) -> list[Any]:
    """Every non-empty YAML document of the file (or stdin)."""
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
    except OSError as exc:
        raise _bad(file, f"cannot read it: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise _bad(file, "it is not UTF-8 text") from None
    try:
        documents = [doc for doc in yaml.load_all(text, Loader=SpecLoader) if doc is not None]
    except yaml.YAMLError as exc:
        raise _bad(file, f"not valid YAML: {exc}") from None
    except RecursionError:  # lists or mappings nested thousands deep
        raise _bad(file, "not valid YAML: nested too deeply") from None
    if not documents:
        raise _bad(file, "expected one YAML document, found 0")
    return documents


def job_from_spec(spec: Any, file: str) -> JsonObject:
    """The JobCreate body for a ``type: job`` spec, or a usage error naming the field."""
    if not isinstance(spec, dict):
        raise _bad(file, "the spec must be a mapping of fields such as type, command, resources")
    kind = spec.get("type")
    if kind is None:
        raise _bad(file, "type: missing; this command takes `type: job`")
    if kind != "job":
        raise _bad(
            file, f"type: unknown type {kind!r}; this command takes `type: job` or `service`"
        )
    _check_keys(spec, SPEC_KEYS, "", file)
    body: JsonObject = {"type": "job"}
    for key in ("tenant", "name", "vc", "site", "environment", "image", "data"):
        if spec.get(key) is not None:
            body[key] = _checked(spec[key], key, file, validate_name, str)
    body["command"] = _command(spec.get("command"), file)
    if spec.get("resources") is not None:
        body["resources"] = _resources(spec["resources"], file)
    if spec.get("tasks") is not None:
        tasks = spec["tasks"]
        if not _is_int(tasks) or tasks < 1:
            raise _bad(file, f"tasks: {tasks!r} is not a whole number >= 1")
        body["tasks"] = tasks
    if spec.get("time") is not None:
        body["time"] = _checked(spec["time"], "time", file, parse_duration, str, int)
    if spec.get("priority") is not None:
        body["priority"] = _checked(spec["priority"], "priority", file, _anything, str)
    if spec.get("env") is not None:
        body["env"] = _env(spec["env"], file)
    if spec.get("workdir") is not None:
        body["workdir"] = absolute(_checked(spec["workdir"], "workdir", file, _anything, str))
    for key, parse in (
        ("array", parse_array),
        ("dependency", parse_dependencies),
        ("signal", parse_signal_spec),
    ):
        if spec.get(key) is not None:
            body[key] = _checked(str(spec[key]), key, file, parse, str)
    if spec.get("stage") is not None:
        if not isinstance(spec["stage"], bool):
            raise _bad(file, f"stage: {spec['stage']!r} is not true or false")
        body["stage"] = spec["stage"]
    if spec.get("requeue") is not None:
        if not isinstance(spec["requeue"], bool):
            raise _bad(file, f"requeue: expected true or false, not {spec['requeue']!r}")
        body["requeue"] = spec["requeue"]
    if spec.get("node_class") is not None:
        body["node_class"] = _checked(spec["node_class"], "node_class", file, _anything, str)
    if spec.get("constraints") is not None:
        items = spec["constraints"]
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise _bad(file, "constraints: expected a list of labels (key=value or a name)")
        body["constraints"] = items
    return body


def _command(command: Any, file: str) -> list[str]:
    if isinstance(command, str) and command.strip():
        return [SHELL, "-c", command]
    if isinstance(command, list) and command:
        for index, part in enumerate(command):
            if isinstance(part, bool) or not isinstance(part, str | int | float):
                raise _bad(file, f"command[{index}]: {part!r} is not text; quote it")
        return [str(part) for part in command]
    raise _bad(file, "command: missing; give a list of words, or one string run by /bin/sh -c")


def _resources(resources: Any, file: str) -> JsonObject:
    if not isinstance(resources, dict):
        raise _bad(file, "resources: expected a mapping with cpu, memory, gpu")
    _check_keys(resources, RESOURCE_KEYS, "resources.", file)
    out: JsonObject = {}
    if resources.get("cpu") is not None:
        out["cpu"] = _checked(resources["cpu"], "resources.cpu", file, parse_cpu, str, int, float)
    if resources.get("memory") is not None:
        out["memory"] = _checked(
            resources["memory"], "resources.memory", file, parse_memory, str, int
        )
    if resources.get("gpu") is not None:
        gpu = resources["gpu"]
        if not _is_int(gpu) or gpu < 0:
            raise _bad(file, f"resources.gpu: {gpu!r} is not a whole number >= 0")
        out["gpu"] = gpu
    return out


def _env(env: Any, file: str) -> dict[str, str]:
    if not isinstance(env, dict):
        raise _bad(file, "env: expected a mapping of NAME: value")
    out: dict[str, str] = {}
    for key, value in env.items():
        if not isinstance(key, str) or not validate.ENV_NAME_RE.match(key):
            raise _bad(file, f"env: {key!r} is not a valid variable name")
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise _bad(file, f"env.{key}: {value!r} is not text; quote it")
        out[key] = str(value)
    return out


def _checked(
    value: Any, field: str, file: str, parse: Callable[[Any], object], *types: type
) -> Any:
    """``value`` if it is one of ``types`` and ``parse`` accepts it."""
    if isinstance(value, bool) or not isinstance(value, types):
        expected = " or ".join(_TYPE_NAMES[t] for t in types)
        raise _bad(file, f"{field}: expected {expected}, not {value!r}")
    try:
        parse(value)
    except InvalidRequest as exc:
        message = exc.message.removeprefix(f"{exc.field}: ") if exc.field else exc.message
        raise _bad(file, f"{field}: {message}") from None
    return value


def _anything(value: Any) -> object:
    return value


def _check_keys(mapping: dict[Any, Any], allowed: tuple[str, ...], prefix: str, file: str) -> None:
    unknown = sorted(str(key) for key in mapping if key not in allowed)
    if unknown:
        raise _bad(
            file, f"{prefix}{unknown[0]}: unknown field; expected one of {', '.join(allowed)}"
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _bad(file: str, message: str) -> typer.BadParameter:
    source = "stdin" if file == "-" else file
    return typer.BadParameter(f"{source}: {message}", param_hint="-f")
