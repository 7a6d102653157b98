"""A corpus of realistic batch scripts, each resolved to the values Slurm 22.05 would give.

The scripts are in ``corpus/`` and what Slurm gives each in ``corpus/expected.yaml``;
``tests/unit/cli/test_cli_sbatch.py`` runs the same corpus through
``virtuai sbatch --test-only --json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from virtuai.slurmfront.resolve import Context, resolve

CORPUS = Path(__file__).parent / "corpus"
EXPECTED: dict[str, dict[str, Any]] = yaml.safe_load((CORPUS / "expected.yaml").read_text())
SUBMIT_DIR = "/home/ada/run"


def resolved(name: str, env: dict[str, str] | None = None) -> Any:
    text = (CORPUS / name).read_bytes().decode("utf-8", errors="replace")
    return resolve(text, [], Context(name, SUBMIT_DIR, "ada", env or {}))


def test_corpus_is_complete() -> None:
    scripts = sorted(p.name for p in CORPUS.glob("*.sh"))
    assert len(scripts) >= 30
    assert scripts == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_script_resolves_as_slurm_would(name: str) -> None:
    expected = dict(EXPECTED[name])
    res = resolved(name)
    problems = expected.pop("problems")
    fates = expected.pop("fates", {})
    assert [[p.kind, p.line] for p in res.problems] == problems, [str(p) for p in res.problems]
    got = res.to_json()
    for key, value in expected.items():
        assert got[key] == value, key
    by_line = {d.line: d.fate for d in res.directives if d.line is not None}
    for line, fate in fates.items():
        assert by_line[line] == fate, line


def test_every_directive_line_is_accounted_for() -> None:
    """Nothing is dropped unseen: every line mentioning SBATCH comes back with a fate."""
    for name in EXPECTED:
        text = (CORPUS / name).read_bytes().decode("utf-8", errors="replace")
        if not text.startswith("#!") or "\r" in text:
            continue
        lines = {
            number
            for number, line in enumerate(text.split("\n"), start=1)
            if ("#SBATCH" in line or "#SLURM" in line) and number > 1
        }
        seen = {d.line for d in resolved(name).directives}
        seen |= {p.line for p in resolved(name).problems}
        assert lines <= seen, (name, lines - seen)
