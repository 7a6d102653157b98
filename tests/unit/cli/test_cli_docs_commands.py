"""The docs say what the code has: every ``virtuai ...`` command line in README.md and
docs/*.md names subcommands and options the Typer app has, every file path they cite
exists, and every ``group.key`` setting they name is one of ``virtuai.settings``'.

New users run what the docs say; a renamed flag or a moved module must fail here, not
at their terminal.  Positional arguments and option values are not checked (they are
placeholders: ``42``, ``NAME``); commands that pass unknown options on (``sbatch``,
``srun``: Slurm's own options) are checked up to their first such option.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from pydantic import BaseModel

from virtuai.cli.main import app
from virtuai.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
# benchmarks.md is left out: its sections are history, in the words of their day.
DOCS = sorted(
    [ROOT / "README.md", *(p for p in (ROOT / "docs").glob("*.md") if p.name != "benchmarks.md")]
)
FENCE = re.compile(r"^\s*```")
# Where a command line starts inside a shell line: at its start or after a separator.
COMMAND_START = re.compile(r"(?:^|&&|\|\||[|;]|\$\(|\bthen\b|\bdo\b)\s*(virtuai\s.*)")
# Tokens that end the command (redirections, pipes, a shell's own syntax).
SHELL_END = {"|", "||", "&&", ";", "&", "--", "...", "…"}
# Backticked names of the form group.key that are not settings (a column, a file).
NOT_SETTINGS = {"services.demand_at"}
TOP_FOLDERS = ("src/", "tests/", "bench/", "scripts/", "deploy/", "docs/", "examples/")


def command_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, command)``: shell lines in fenced blocks and inline code spans."""
    in_fence = False
    pending: list[Any] | None = None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if not in_fence:
            for match in re.finditer(r"`(virtuai [^`]+)`", line):
                yield number, match.group(1)
            continue
        text = line.strip()
        if pending is not None:  # a continued line (trailing backslash)
            pending[1] += " " + text.rstrip("\\")
            if not text.endswith("\\"):
                yield pending[0], pending[1]
                pending = None
            continue
        if text.startswith("#"):
            continue
        start = COMMAND_START.search(re.sub(r"^\$\s+", "", text))
        if start is None:
            continue
        command = start.group(1)
        if command.endswith("\\"):
            pending = [number, command.rstrip("\\")]
        else:
            yield number, command


def problems(command_line: str, root: Any) -> list[str]:
    """What in ``command_line`` the app does not have (empty: all of it exists)."""
    try:
        words = shlex.split(command_line, comments=True)[1:]
    except ValueError:
        return []  # not shell (prose with an apostrophe); nothing to check
    command, path, found, i = root, ["virtuai"], [], 0
    while i < len(words):
        word = words[i]
        if word.startswith("[-"):  # an optional option in a synopsis: [-u USER]
            word = word[1:].rstrip("]")
        if word in SHELL_END or word[:1] in (">", ")") or word.startswith(("2>", "<<")):
            break
        if word.startswith("-") and len(word) > 1 and not word[1].isdigit():
            name, eq, _ = word.partition("=")
            options = {
                opt: param
                for param in command.params
                if getattr(param, "param_type_name", "") == "option"
                for opt in (*param.opts, *param.secondary_opts)
            }
            if name == "--help":
                i += 1
                continue
            # A cluster of short options (-it), or one with its value attached (-n4).
            if (
                name not in options
                and not name.startswith("--")
                and len(name) > 2
                and (all(f"-{c}" in options for c in name[1:]) or name[:2] in options)
            ):
                i += 1
                continue
            if name not in options:
                if (command.context_settings or {}).get("ignore_unknown_options"):
                    break  # Slurm's options, parsed by the command itself
                found.append(f"{' '.join(path)} has no option {name}")
                i += 1
                continue
            option = options[name]
            takes_value = not option.is_flag and not option.count
            i += 2 if takes_value and not eq else 1
            continue
        subcommands = getattr(command, "commands", None)
        if subcommands is not None:
            if re.match(r"^[<\[{A-Z]", word):
                break  # a placeholder (`virtuai <cmd>`, `virtuai vc NAME`)
            missing = [alt for alt in word.split("|") if alt not in subcommands]
            if missing:
                found.append(f"{' '.join(path)} has no subcommand {', '.join(missing)}")
                break
            command = subcommands[word.split("|")[0]]
            path.append(word.split("|")[0])
            i += 1
            continue
        if not command.allow_interspersed_args:
            break  # the rest is the job's command line
        i += 1
    return found


def setting_keys() -> set[str]:
    keys: set[str] = set()

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            keys.add(prefix + name)
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
                walk(field.annotation, f"{prefix}{name}.")

    walk(Settings, "")
    return keys


@pytest.fixture(scope="module")
def root() -> Any:
    return typer.main.get_command(app)


def test_the_docs_have_command_lines_to_check() -> None:
    # The extraction itself must find the README's quick start, or every check passes.
    commands = [c for doc in DOCS for _, c in command_lines(doc)]
    assert len(commands) > 150
    assert any(c.startswith("virtuai submit --cpu 2") for c in commands)


def test_the_check_catches_unknown_subcommands_and_options(root: Any) -> None:
    assert problems("virtuai submit --cpu 2 -- python x.py --bogus", root) == []
    assert problems("virtuai submit --cpuz 2 x", root) == ["virtuai submit has no option --cpuz"]
    assert problems("virtuai vc frobnicate lab", root) == [
        "virtuai vc has no subcommand frobnicate"
    ]
    assert problems("virtuai sbatch -A physics --test-only x.sh", root) == []
    nope = problems("virtuai squeue [-u USER] [--nope]", root)
    assert nope == ["virtuai squeue has no option --nope"]


def test_every_command_line_in_the_docs_exists(root: Any) -> None:
    wrong = [
        f"{doc.relative_to(ROOT)}:{number}: {problem}   [{command}]"
        for doc in DOCS
        for number, command in command_lines(doc)
        for problem in problems(command, root)
    ]
    assert wrong == []


def test_every_file_path_in_the_docs_exists() -> None:
    cited = re.compile(
        r"(?<![\w/.$-])((?:src|tests|bench|scripts|deploy|docs|examples)/[\w./-]*\w"
        r"|(?:[a-z]+/)+[\w-]+\.(?:py|sh|js|css|html|yaml))"
    )
    package = ROOT / "src" / "virtuai"
    wrong = []
    for doc in DOCS:
        for number, line in enumerate(doc.read_text().splitlines(), 1):
            for match in cited.finditer(line):
                name = match.group(1)
                if "*" in line[match.end() : match.end() + 1]:
                    continue  # a glob (tests/unit/test_sched_*.py)
                if name.startswith(TOP_FOLDERS):
                    exists = (ROOT / name).exists()
                else:  # relative to the package (cli/lean.py) or to a folder above
                    exists = (
                        (package / name).exists()
                        or (package.parent / name).exists()
                        or any(package.rglob(name))
                    )
                if not exists:
                    wrong.append(f"{doc.relative_to(ROOT)}:{number}: {name}")
    assert wrong == []


def test_every_setting_named_in_the_docs_exists() -> None:
    keys = setting_keys()
    groups = {key for key in keys if "." not in key}
    alternatives = "|".join(sorted(groups))
    named = re.compile(rf"`(({alternatives})\.[a-z_][a-z0-9_]*)(?=[`:= ])")
    package = ROOT / "src" / "virtuai"
    wrong = [
        f"{doc.relative_to(ROOT)}:{number}: {match.group(1)}"
        for doc in DOCS
        for number, line in enumerate(doc.read_text().splitlines(), 1)
        for match in named.finditer(line)
        if match.group(1) not in keys
        and match.group(1) not in NOT_SETTINGS
        and not (package / match.group(1).replace(".", "/")).with_suffix(".py").exists()
        and not any(package.rglob(match.group(1)))  # a file: services.js
    ]
    assert wrong == []
