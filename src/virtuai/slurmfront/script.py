"""Finding the ``#SBATCH`` directives of a batch script, exactly where ``sbatch`` looks.

Slurm 22.05 reads lines from the top; a line that starts with ``#SBATCH`` (in
column 1) is a directive, ``#SLURM`` too (with a warning); any other line
whose first non-blank character is ``#``, and any blank line, is skipped; the
first other line is a command and ends the directives.  So ``##SBATCH`` and
`` #SBATCH`` are comments, and an ``#SBATCH`` after the first command is
ignored (we list it, with its line, so nothing is dropped unseen).  Words
are split as sbatch splits them: quotes group, a backslash escapes, and an
unquoted ``#`` starts a comment.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAGIC = "#SBATCH"
OLD_MAGIC = "#SLURM"
FOREIGN_MAGIC = ("#PBS", "#BSUB")


class ScriptError(ValueError):
    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


@dataclass(frozen=True, slots=True)
class DirectiveLine:
    line: int
    text: str
    words: tuple[str, ...]


@dataclass(slots=True)
class ScriptScan:
    interpreter: str  # the #! line, without "#!"
    directives: list[DirectiveLine] = field(default_factory=list)
    # #SBATCH lines after the first command: Slurm ignores them.
    ignored: list[DirectiveLine] = field(default_factory=list)
    # "#SBATCH"-like lines that are comments (##SBATCH, indented, #PBS...).
    comments: list[DirectiveLine] = field(default_factory=list)
    # #PBS and #BSUB directives, which Slurm translates (virtuai does not).
    foreign: list[DirectiveLine] = field(default_factory=list)
    first_command_line: int | None = None
    warnings: list[str] = field(default_factory=list)


def scan(text: str) -> ScriptScan:
    """Directives of a script; ``ScriptError`` where sbatch itself would refuse the script."""
    if "\x00" in text:
        raise ScriptError("the script contains a NUL character; sbatch refuses it")
    if text.startswith("\ufeff#!"):
        raise ScriptError(
            "the script starts with a byte-order mark (U+FEFF, saved by a Windows editor) "
            "before #!; sbatch refuses it (save it as UTF-8 without BOM)",
            1,
        )
    if not text.startswith("#!"):
        raise ScriptError(
            "this does not look like a batch script: the first line must start with #! "
            "followed by the path to an interpreter (e.g. #!/bin/bash)",
            1,
        )
    if "\r\n" in text:
        raise ScriptError(
            "the script has DOS line breaks (\\r\\n) instead of UNIX ones (\\n); sbatch "
            "refuses it (convert it with dos2unix)"
        )
    lines = text.split("\n")
    result = ScriptScan(interpreter=lines[0][2:].strip())
    if MAGIC in lines[0] or OLD_MAGIC in lines[0]:
        # "#!/bin/bash #SBATCH -p gpu": the kernel passes "#SBATCH -p gpu" to bash as
        # one argument (a script name that does not exist), and sbatch reads no directive.
        result.warnings.append(
            "line 1: the #! line holds a directive; neither Slurm nor virtuai reads it, "
            "and the interpreter is given it as an argument (put it on a line of its own)"
        )
    in_header = True
    warned_old = False
    for number, line in enumerate(lines, start=1):
        magic = MAGIC if line.startswith(MAGIC) else OLD_MAGIC if line.startswith(OLD_MAGIC) else ""
        if magic:
            words = tuple(split_words(line[len(magic) :], number))
            entry = DirectiveLine(number, line, words)
            if not in_header:
                result.ignored.append(entry)
                continue
            if magic == OLD_MAGIC and not warned_old:
                result.warnings.append(
                    f"line {number}: change #SLURM to #SBATCH (read as #SBATCH, as Slurm does)"
                )
                warned_old = True
            result.directives.append(entry)
            continue
        stripped = line.strip()
        if line.startswith(FOREIGN_MAGIC):
            result.foreign.append(DirectiveLine(number, line, ()))
            continue
        if stripped.startswith("#") or not stripped:
            if "SBATCH" in stripped.upper() and number > 1:
                result.comments.append(DirectiveLine(number, line, ()))
            continue
        if in_header:
            in_header = False
            result.first_command_line = number
    return result


def split_words(text: str, line: int) -> list[str]:
    """sbatch's ``_get_argument``, applied until the line is used up."""
    words: list[str] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i < n and text[i] == ":":
            raise ScriptError(f"unexpected ':' in {text.strip()!r}", line)
        if i >= n:
            return words
        chars: list[str] = []
        quote = ""
        escaped = False
        comment = False
        while i < n and (quote or not text[i].isspace()):
            char = text[i]
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
                i += 1
                continue
            elif quote:
                if char == quote:
                    quote = ""
                    i += 1
                    continue
            elif char in "\"'":
                quote = char
                i += 1
                continue
            elif char == "#":
                comment = True
                break
            chars.append(char)
            i += 1
        if quote:
            raise ScriptError(f"unmatched {quote} in {text.strip()!r}", line)
        if chars:
            words.append("".join(chars))
        if comment:
            return words
