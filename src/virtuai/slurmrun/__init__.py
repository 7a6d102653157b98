"""Slurm's execution model inside a virtuai task: the batch step, ``srun`` and ``scontrol``.

``runner.py`` and the modules it uses are shipped *as source* in the job's command
(``python3 -c``), so they run wherever the task runs (this machine, a virtual node,
an image without virtuai) and must import nothing but the standard library (an
import-linter contract keeps it so).  ``bundle_source`` makes the one source text
shipped: a loader that registers the helper modules, then ``runner.py``.
"""

from __future__ import annotations

import ast
from importlib import resources

# In import order: each may use those before it.  ``stepnet`` only for multi-node jobs.
SHIPPED = ("hostlists", "stepnet", "mpi", "launch")
_FUTURE = "from __future__ import annotations\n"
BUNDLE_MARKER = "# -- virtuai slurm runner --\n"  # as runner.BUNDLE_MARKER (which is shipped)


def _read(name: str) -> str:
    return resources.files(__name__).joinpath(f"{name}.py").read_text(encoding="utf-8")


def _code_only(text: str) -> str:
    """The module without its docstrings and comments: the job's environment carries it
    (for every element of an array), so it travels as small as it can."""
    tree = ast.parse(text)
    tree.body = [
        n for n in tree.body if not (isinstance(n, ast.ImportFrom) and n.module == "__future__")
    ]
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef):
            first = node.body[0] if node.body else None
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                node.body = node.body[1:] or [ast.Pass()]
    return _FUTURE + ast.unparse(tree) + "\n"


def bundle_source(*, multi_node: bool = True) -> str:
    """``runner.py``, preceded by a loader that puts the shipped modules in ``sys.modules``
    as ``virtuai_<name>`` (where ``runner``/``launch`` look for them first) and keeps their
    text in ``_BUNDLED`` (for the shims, which import them as files)."""
    names = [n for n in SHIPPED if multi_node or n != "stepnet"]
    modules = ", ".join(f"({f'virtuai_{n}'!r}, {_code_only(_read(n))!r})" for n in names)
    loader = (
        f"_BUNDLED = ({modules},)\n"
        "import sys as _sys, types as _types\n"
        "for _name, _text in _BUNDLED:\n"
        "    _module = _types.ModuleType(_name)\n"
        "    _sys.modules[_name] = _module\n"
        "    exec(compile(_text, _name + '.py', 'exec'), _module.__dict__)\n"
    )
    runner = _code_only(_read("runner"))
    assert runner.startswith(_FUTURE)  # the loader goes after it: it must come first
    return runner.replace(_FUTURE, _FUTURE + loader + BUNDLE_MARKER, 1)
