"""The commands the docs tell a reader to type, as found in the Markdown, and how the
`invoke` ones parse against the real task collection.

What counts as a command:
- every line of a fenced block tagged `sh`, `shell` or `bash`, except comments, blank
  lines and `export` lines (those set the shell up for the lines after them);
- in an untagged block, the lines that start like a command (`invoke`, `./scripts/run`,
  `.venv/bin/`, ...): untagged blocks also hold diagrams and task tables;
- in a `console` block, the lines that start with `$ `;
- outside blocks, inline code that starts with `invoke `, `./scripts/run ` or
  `.venv/bin/invoke`.
A trailing `# comment` is dropped, a line ending in `\\` continues on the next, and
runs of spaces become one, so the text of a command is what a reader would copy.
"""

from __future__ import annotations

import copy
import importlib.util
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from invoke import Collection, Program
from invoke.parser import Parser

REPO_ROOT = Path(__file__).resolve().parents[3]


def doc_files(root: Path = REPO_ROOT) -> list[Path]:
    """The docs whose commands must work: README.md, docs/*.md, tests/infra/README.md."""
    return [
        root / "README.md",
        *sorted((root / "docs").glob("*.md")),
        root / "tests/infra/README.md",
    ]


SHELL_TAGS = frozenset({"sh", "shell", "bash"})
# How a command starts, for the places that mix commands with other text.
COMMAND_STARTS = (
    "invoke ", "./scripts/run ", ".venv/bin/", ".github/scripts/", "pytest ",
    "python -m pytest ", "aws ", "sudo ", "systemctl ", "journalctl ", "cat ", "cp ", "git ",
)  # fmt: skip
INLINE_STARTS = ("invoke ", "./scripts/run ", ".venv/bin/invoke")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<tag>[\w-]*)\s*$")
INLINE_CODE = re.compile(r"(?<!`)`(?!`)([^`]+)`(?!`)")
# Placeholders a reader replaces: <the AMI just built>, and a trailing … or ...
ANGLE_PLACEHOLDER = re.compile(r"<[^<>]*>")
ELLIPSIS = ("…", "...")
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass(frozen=True)
class DocCommand:
    """One command as a doc shows it."""

    doc: str  # path relative to the repository
    line: int  # where it starts (1-based)
    text: str  # the command, as a reader would copy it
    setup: tuple[str, ...] = ()  # `export` lines of the same block before it
    inline: bool = False  # inline code in prose, not a line of a block

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"


def strip_comment(line: str) -> str:
    """The line without a trailing `# comment` (a `#` inside quotes stays)."""
    quote = ""
    for index, char in enumerate(line):
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index].rstrip()
    return line.rstrip()


def _squeeze(text: str) -> str:
    return " ".join(text.split())


def _block_commands(doc: str, tag: str, lines: list[tuple[int, str]]) -> list[DocCommand]:
    found: list[DocCommand] = []
    setup: list[str] = []
    pending: tuple[int, str] | None = None
    for number, raw in lines:
        if pending is not None:
            start, head = pending
            number, raw = start, f"{head} {raw.strip()}"
            pending = None
        if raw.rstrip().endswith("\\"):
            pending = (number, raw.rstrip()[:-1].rstrip())
            continue
        line = raw.strip()
        if tag == "console":
            if not line.startswith("$ "):
                continue
            line = line[2:]
        text = _squeeze(strip_comment(line))
        if not text:
            continue
        if tag == "" and not text.startswith(COMMAND_STARTS):
            continue
        if text.startswith("export "):
            setup.append(text)
            continue
        found.append(DocCommand(doc, number, text, tuple(setup)))
    return found


def commands_in(path: Path, root: Path = REPO_ROOT) -> list[DocCommand]:
    """Every command of one doc, in the order the doc shows them."""
    doc = str(path.relative_to(root))
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[DocCommand] = []
    prose: list[tuple[int, str]] = []
    block: list[tuple[int, str]] | None = None
    tag = ""
    for number, line in enumerate(lines, start=1):
        fence = FENCE.match(line)
        if fence and block is None:
            block, tag = [], fence["tag"]
        elif fence and block is not None:
            if tag in SHELL_TAGS or tag in ("", "console"):
                found += _block_commands(doc, tag, block)
            block = None
        elif block is not None:
            block.append((number, line))
        else:
            prose.append((number, line))
    found += _inline_commands(doc, prose)
    return sorted(found, key=lambda command: command.line)


def _inline_commands(doc: str, prose: list[tuple[int, str]]) -> list[DocCommand]:
    """Inline code that is an invoke command; a span may run on over a line break."""
    found = []
    for first, paragraph in _paragraphs(prose):
        for match in INLINE_CODE.finditer(paragraph):
            text = _squeeze(match.group(1))
            if text.startswith(INLINE_STARTS):
                line = first + paragraph.count("\n", 0, match.start())
                found.append(DocCommand(doc, line, text, inline=True))
    return found


def _paragraphs(prose: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """(first line number, text) of each run of non-blank lines."""
    runs: list[tuple[int, list[str]]] = []
    previous = -1
    for number, line in prose:
        if not line.strip():
            previous = -1
            continue
        if number != previous + 1:
            runs.append((number, []))
        runs[-1][1].append(line)
        previous = number
    return [(first, "\n".join(lines)) for first, lines in runs]


def documented_commands(root: Path = REPO_ROOT) -> list[DocCommand]:
    """Every command of every doc."""
    return [command for path in doc_files(root) for command in commands_in(path, root)]


def block_after(path: Path, marker: str, tag: str) -> str:
    """The text of the first block tagged `tag` after the line holding `marker`."""
    lines = path.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if marker in line)
    body: list[str] | None = None
    indent = ""
    for line in lines[start + 1 :]:
        fence = FENCE.match(line)
        if fence and body is None and fence["tag"] == tag:
            body, indent = [], fence["indent"]
        elif fence and body is not None:
            return "\n".join(body) + "\n"
        elif body is not None:
            body.append(line.removeprefix(indent))
    raise LookupError(f"{path}: no ```{tag} block after {marker!r}")


# --- invoke -----------------------------------------------------------------------

# `.github/scripts/bakery-aws TASK ARGS` runs this; tests/unit/ci/test_workflow.py
# (test_bakery_aws_layers_the_account_settings_over_config) holds the script to it.
BAKERY_AWS_OPTIONS = ["--config", "build/ci/account.yaml", "--set", "aws.region=REGION"]
# In a synopsis (`invoke TASK --config ...`) TASK in the task's place stands for any
# task; `images` takes the options every task shares.
ANY_TASK = ("TASK", "images")
# A task named in prose without its required options (`invoke release`) is a mention:
# its task and flags must exist, but it is not a command to run.
MENTION = "did not receive required positional arguments"


def shell_words(text: str) -> list[str]:
    """The words of a command, with <placeholders> as one word and no trailing ellipsis."""
    words = shlex.split(ANGLE_PLACEHOLDER.sub("PLACEHOLDER", text))
    return [word for word in words if word not in ELLIPSIS]


def invoke_argv(text: str) -> list[str] | None:
    """What invoke is given by this command (after `invoke`), or None if it runs no task."""
    words = shell_words(text)
    while words and ENV_ASSIGNMENT.match(words[0]):
        words = words[1:]
    if words[:2] == ["./scripts/run", "invoke"]:
        argv = words[2:]
    elif words[:1] in (["invoke"], [".venv/bin/invoke"]):
        argv = words[1:]
    elif words[:1] == [".github/scripts/bakery-aws"] and len(words) > 1:
        argv = [words[1], *BAKERY_AWS_OPTIONS, *words[2:]]
    else:
        return None
    if argv[:1] == [ANY_TASK[0]]:
        argv = [ANY_TASK[1], *argv[1:]]
    return argv


def task_collection(root: Path = REPO_ROOT) -> Collection:
    """The tasks `invoke --list` shows, loaded from tasks.py as invoke loads them."""
    spec = importlib.util.spec_from_file_location("bakery_docs_tasks", root / "tasks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return Collection.from_module(module)


def parse_invoke(argv: list[str], collection: Collection) -> list[Any]:
    """Parse argv with invoke's own parser (core flags, then tasks and their flags).

    Raises invoke's ParseError for an unknown task or flag, a flag without its value, or
    a task missing a required argument, with invoke's own message.
    """
    # to_contexts() pops each task's help= entries (the CLI builds them once), and the
    # tasks are the ones other tests import: build the contexts from a copy.
    contexts = copy.deepcopy(collection).to_contexts()
    parser = Parser(initial=Program().initial_context, contexts=contexts)
    return list(parser.parse_argv(argv))
