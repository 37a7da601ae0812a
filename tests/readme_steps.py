"""The README's "Using agentflow in your site" steps, read from README.md itself.

The adoption test applies exactly these to a new ``django-admin startproject`` site, so the
README and the test cannot drift apart. Each Python block of the section's setup part starts
with a label naming its file and how it goes in::

    # <project>/settings.py, at the end            (appended)
    # <project>/celery.py, a new file              (written)
    # <project>/asgi.py, the whole file            (written over startproject's)
    # <project>/settings.py, at the end, on RabbitMQ   (appended for that broker only)

The shell blocks hold the commands (``pip install``, ``python manage.py``, ``celery -A``);
the ``### Commands`` block holds the ``manage.py agentflow`` command lines.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Using agentflow in your site"
PLACEHOLDER = "<project>"
LABEL = re.compile(r"^# (?P<path>(?:<project>/)?[\w/]+\.py)(?P<how>[,:].*)?$")
FENCE = re.compile(r"^```(?P<lang>\w*)\n(?P<code>.*?)^```$", re.S | re.M)


@dataclass(frozen=True)
class FileBlock:
    path: str  # relative to the directory of manage.py, with <project> in it
    mode: str  # "append" or "write"
    broker: str | None  # None: every site; "rabbitmq": only on that broker
    code: str
    label: str

    def target(self, project: str) -> str:
        return self.path.replace(PLACEHOLDER, project)

    def text(self, project: str) -> str:
        return self.code.replace(PLACEHOLDER, project)


@dataclass(frozen=True)
class Steps:
    files: list[FileBlock]
    commands: list[str]  # shell lines of the setup part, comments stripped
    cli: list[str]  # the ``### Commands`` lines

    def files_for(self, broker: str) -> list[FileBlock]:
        return [block for block in self.files if block.broker in (None, broker)]

    def command(self, prefix: str) -> list[str]:
        """The one setup command starting with ``prefix``, as argv."""
        found = [line for line in self.commands if line.startswith(prefix)]
        assert len(found) == 1, f"README: expected one {prefix!r} command, found {found}"
        return shlex.split(found[0])

    def cli_command(self, action: str) -> list[str]:
        """The ``python manage.py agentflow <action>`` line of Commands, as argv.

        Optional parts in ``[...]`` are dropped; placeholders are kept with ``_`` for
        spaces (``<approval_id>``, ``<username>``), for the caller to fill.
        """
        prefix = f"python manage.py agentflow {action} "
        found = [line for line in self.cli if line.startswith(prefix)]
        assert len(found) == 1, f"README Commands: expected one {action!r} line, found {found}"
        line = re.sub(r"\s*\[[^\]]*\]", "", found[0])
        return shlex.split(re.sub(r"<[^>]+>", lambda m: m[0].replace(" ", "_"), line))


def section(text: str) -> str:
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return text[start : end if end != -1 else len(text)]


def read(text: str | None = None) -> Steps:
    body = section(README.read_text() if text is None else text)
    setup = body.partition("\n### ")[0]
    files: list[FileBlock] = []
    commands: list[str] = []
    for match in FENCE.finditer(setup):
        lang, code = match["lang"], match["code"]
        if lang == "sh":
            for line in code.splitlines():
                line = line.split("  #", 1)[0].strip()
                if line:
                    commands.append(line)
            continue
        assert lang == "python", f"README: a {lang or 'plain'} block in the setup steps"
        files.append(_file_block(code))
    commands_part = body[body.index("### Commands") :]
    cli_block = FENCE.search(commands_part)
    assert cli_block, "README: the Commands subsection has no code block"
    cli = [line.strip() for line in cli_block["code"].splitlines() if line.strip()]
    return Steps(files=files, commands=commands, cli=cli)


def _file_block(code: str) -> FileBlock:
    first = code.splitlines()[0]
    label = LABEL.match(first)
    assert label, (
        "README: every Python block of the setup steps starts with a '# <project>/file.py, "
        f"at the end' (or 'a new file', 'the whole file') label; this one starts {first!r}"
    )
    how = (label["how"] or "").lower()
    if "at the end" in how:
        mode = "append"
    elif "a new file" in how or "the whole file" in how:
        mode = "write"
    else:
        raise AssertionError(f"README: {first!r} says neither 'at the end' nor 'the whole file'")
    broker = "rabbitmq" if "rabbitmq" in how else None
    return FileBlock(path=label["path"], mode=mode, broker=broker, code=code, label=first)
