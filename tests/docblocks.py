"""Fenced code blocks of the project's Markdown files, and the markers that say how to run them."""

# A ```sh or ```python block is run by tests/e2e/test_docs.py as written. An HTML
# comment on the line just before the fence changes how:
#
#     <!-- run: daemon -->        it starts a long-running collector: the test waits for
#                                 its `ready:` line, then sends SIGINT (a user's Ctrl-C)
#     <!-- run: amqp -->          it needs a broker: run against the test suite's private
#                                 RabbitMQ node, whose URL is in $AMQP_URL (with `daemon`
#                                 too: `<!-- run: amqp daemon -->`)
#     <!-- run: broker -->        it starts scripts/rabbitmq: run on private ports, then stopped
#     <!-- not-run: REASON -->    not run; the reason is mandatory and the test lists them
#
# Blocks in other languages (json, toml, text, ini, or none) are samples, not commands.

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

RUNNABLE = ("sh", "python")
RUN_WORDS = ("daemon", "amqp", "broker")
# Samples: output, file contents, diagrams. A command must be in a ```sh block.
SAMPLES = ("", "json", "toml", "text", "ini")

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>```+)(?P<lang>[^`\s]*)\s*$")
_MARKER = re.compile(r"^\s*<!--\s*(?P<kind>run|not-run)\s*:\s*(?P<value>.*?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced block: where it is, its language, its text and its marker."""

    where: str  # "README.md:42": the file, relative to the checkout, and the opening fence's line
    line: int
    lang: str
    text: str
    run: str = ""  # the words of its `run:` marker, sorted: "", "daemon", "amqp", "amqp daemon", "broker"
    not_run: str = ""  # the reason, when the block is marked not-run


class DocFormatError(ValueError):
    """A block or marker the runner cannot classify."""


def parse(path: Path, root: Path) -> list[Block]:
    """Every fenced block of *path*, with the marker on the line before its fence."""
    lines = path.read_text(encoding="utf-8").splitlines()
    name = str(path.relative_to(root))
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        start, fence, lang = i, match["fence"], match["lang"]
        body: list[str] = []
        i += 1
        while i < len(lines) and lines[i].strip() != fence:
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise DocFormatError(f"{name}:{start + 1}: fence never closed")
        i += 1
        run = not_run = ""
        marker = _MARKER.match(lines[start - 1]) if start else None
        if marker is not None:
            if marker["kind"] == "not-run":
                not_run = marker["value"]
                if not not_run:
                    raise DocFormatError(f"{name}:{start + 1}: `<!-- not-run: -->` needs a reason")
            else:
                words = marker["value"].split()
                unknown = [word for word in words if word not in RUN_WORDS]
                if unknown or not words:
                    raise DocFormatError(
                        f"{name}:{start + 1}: unknown marker `run: {marker['value']}` (known: {', '.join(RUN_WORDS)})"
                    )
                run = " ".join(sorted(words))
        blocks.append(Block(f"{name}:{start + 1}", start + 1, lang, "\n".join(body) + "\n", run, not_run))
    return blocks


def doc_files(root: Path) -> list[Path]:
    """README.md and every docs/*.md."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]
