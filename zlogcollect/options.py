"""One declaration per setting: the option table's entries, the checks they name, the TOML example.

Pure: the standard library only; config.py declares the settings, cli.py turns them into click options.
"""

from __future__ import annotations

import dataclasses
import json
import textwrap
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar, cast

RECEIVE: Final = "receive"
"""Settings of the receive side: `collect` and `bridge` both take them."""
FILES: Final = "files"
"""Settings of the file sink: only `collect` takes them."""
AMQP: Final = "amqp"
"""Settings of the AMQP bridge: `collect` and `bridge` take them."""

Check = Callable[[Any], "str | None"]
"""What is wrong with a value (the text after ``NAME = VALUE: ``), or None if nothing is."""

T = TypeVar("T")


@dataclass(frozen=True)
class Option:
    """How one setting is offered: as a ``zlogcollect`` flag, as a TOML key, and how its value is checked.

    Declared once, beside its field of ``config.CollectorConfig``, with :func:`setting`;
    :func:`table` completes each with the field's name, kind and default. The click
    options (cli.py), the TOML example (:func:`render_example`) and the coercion and
    checks of ``config.from_mapping`` are all derived from that table.
    """

    help: str
    """One text for ``--help`` and for the comment above the key in the TOML example."""
    group: str
    choices: tuple[str, ...] = ()
    case_sensitive: bool = True
    flag: str = ""
    """The flag(s) if not ``--NAME`` (``--NAME/--no-NAME`` for true/false), e.g. ``--utc/--local-time``."""
    metavar: str = ""
    envvar: str = ""
    samples: tuple[Any, ...] = ()
    """Example values, shown commented out in the TOML example."""
    heading: str = ""
    """A comment that opens a section of the TOML example, before this setting."""
    check: Check | None = None
    name: str = ""
    kind: type = str
    """str, int, float, bool, tuple (a list of strings) or dict (a table of NAME = number)."""
    default: Any = None

    @property
    def flags(self) -> tuple[str, ...]:
        """The command-line spelling, e.g. ``("--max-files",)`` or ``("--utc/--local-time",)``."""
        if self.flag:
            return (self.flag,)
        dashed = self.name.replace("_", "-")
        return (f"--{dashed}/--no-{dashed}",) if self.kind is bool else (f"--{dashed}",)

    def complaint(self, value: Any) -> str | None:
        """What is wrong with *value* for this setting, or None."""
        if self.choices:
            folded = value if self.case_sensitive else str(value).upper()
            if folded not in self.choices:
                return f"expected one of {', '.join(self.choices)}"
        return self.check(value) if self.check is not None else None


def setting(default: T, help: str, group: str, **option: Any) -> T:
    """A dataclass field with its :class:`Option` (everything but name, kind and default)."""
    metadata = {"option": Option(help, group, **option)}
    if isinstance(default, dict):
        return cast(T, field(default_factory=dict, metadata=metadata))
    return field(default=default, metadata=metadata)


def at_least(low: int, note: str = "") -> Check:
    """A check that a number is *low* or more; *note* says why, in brackets."""
    complaint = ("must not be negative" if low == 0 else f"must be at least {low}") + (
        f" ({note})" if note else ""
    )
    return lambda value: complaint if value < low else None


def _kind(hint: Any) -> type:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):  # str | None
        return cast(type, next(arg for arg in typing.get_args(hint) if arg is not type(None)))
    if origin is tuple:
        return tuple
    if origin is Mapping:
        return dict
    return cast(type, hint)


def table(cls: type) -> tuple[Option, ...]:
    """The options declared on the fields of dataclass *cls*, completed with their name, kind and default."""
    hints = typing.get_type_hints(cls)
    return tuple(
        dataclasses.replace(
            f.metadata["option"],
            name=f.name,
            kind=_kind(hints[f.name]),
            default=f.default if f.default is not dataclasses.MISSING else {},
        )
        for f in dataclasses.fields(cls)
    )


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    return repr(value)


def _comment(text: str) -> list[str]:
    return textwrap.wrap(text, 98, initial_indent="# ", subsequent_indent="# ", break_on_hyphens=False)


def _example_lines(option: Option) -> list[str]:
    help_text = option.help
    if option.choices:
        help_text += f" One of: {', '.join(option.choices)}."
    if option.envvar:
        help_text += f" The environment variable {option.envvar} works too."
    lines = ["", *_comment(option.heading)] if option.heading else []
    lines += _comment(help_text)
    if option.kind is dict:
        lines += [f"[{option.name}]", *(f"# {key} = {_toml(number)}" for key, number in option.samples)]
    elif option.default is None:
        lines += [f"# {option.name} = {_toml(sample)}" for sample in option.samples]
    elif option.samples:
        lines += [f"{option.name} = [", *(f"  # {_toml(sample)}," for sample in option.samples), "]"]
    else:
        lines.append(f"{option.name} = {_toml(option.default)}")
    return lines


def render_example(options: tuple[Option, ...], header: str) -> str:
    """A TOML file after *header*: every option's help as a comment above its key and default."""
    # A [table] must come last: every key after its header would belong to it.
    ordered = sorted(options, key=lambda option: option.kind is dict)
    lines = [line for option in ordered for line in ["", *_example_lines(option)]]
    return header + "\n".join(lines) + "\n"
