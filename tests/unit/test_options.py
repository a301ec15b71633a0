"""One declaration per setting: the click options, the TOML example and from_mapping agree with the table."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import click
import pytest

from zlogcollect.cli import _given, cli
from zlogcollect.config import EXAMPLE, OPTIONS, CollectorConfig, ConfigError, from_mapping
from zlogcollect.options import AMQP, FILES, RECEIVE, Option, at_least, render_example, setting, table

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

NOT_SETTINGS = {"config_file", "traceback", "version", "help"}
IDS = [option.name for option in OPTIONS]


def params(command: str) -> dict[str, click.Parameter]:
    group = cli
    assert isinstance(group, click.Group)
    return {param.name: param for param in group.commands[command].params if param.name not in NOT_SETTINGS}


def test_every_field_is_declared_once_with_its_default() -> None:
    """The table has one entry per CollectorConfig field, in field order, with the field's default."""
    fields = dataclasses.fields(CollectorConfig)
    assert [option.name for option in OPTIONS] == [f.name for f in fields]
    defaults = CollectorConfig()
    for option in OPTIONS:
        assert option.default == getattr(defaults, option.name), option.name
        assert option.group in (RECEIVE, FILES, AMQP), option.name
        assert option.help.endswith("."), option.name
        assert "\n" not in option.help, option.name


@pytest.mark.parametrize(
    ("command", "groups"), [("collect", {RECEIVE, FILES, AMQP}), ("bridge", {RECEIVE, AMQP})]
)
def test_each_command_has_a_click_option_per_setting_of_its_groups(command: str, groups: set[str]) -> None:
    """collect takes every setting, bridge all but the file ones; nothing else but --config/--traceback."""
    assert set(params(command)) == {option.name for option in OPTIONS if option.group in groups}


@pytest.mark.parametrize("option", OPTIONS, ids=IDS)
def test_click_option_matches_the_table(option: Option) -> None:
    """Flag, default (shown by click), choices, metavar and environment variable come from the table."""
    param = params("collect")[option.name]
    assert isinstance(param, click.Option)
    assert param.show_default is True
    if option.kind is bool:
        assert param.is_bool_flag
        assert option.flags == (f"{param.opts[0]}/{param.secondary_opts[0]}",)
    else:
        assert list(param.opts) == list(option.flags)
    if option.kind in (tuple, dict):
        assert param.multiple
        default = param.default
        assert not callable(default)  # written once, as a value
        assert tuple(default or ()) == tuple(option.default or ())
    else:
        assert param.default == option.default
    if option.choices:
        assert isinstance(param.type, click.Choice)
        assert tuple(param.type.choices) == option.choices
    else:
        assert not isinstance(param.type, click.Choice)
    if option.metavar:
        assert param.metavar == option.metavar
    if option.envvar:
        assert param.envvar == option.envvar


def test_the_example_is_valid_toml_holding_every_setting_at_its_default() -> None:
    """Each setting appears in EXAMPLE with a comment; its value there is the default; it loads back."""
    data = tomllib.loads(EXAMPLE)
    lines = EXAMPLE.splitlines()
    for option in OPTIONS:
        if option.kind is dict:
            spelled = f"[{option.name}]"
        elif option.default is None:
            spelled = f"# {option.name} = "
        else:
            spelled = f"{option.name} = "
        where = [n for n, line in enumerate(lines) if line.startswith(spelled)]
        assert len(where) == 1, (option.name, where)
        assert lines[where[0] - 1].startswith("# "), option.name  # its help, as a comment
        if option.default is None:
            assert option.name not in data
        elif option.kind is tuple:
            assert tuple(data[option.name]) == option.default
        else:
            assert data[option.name] == option.default, option.name
        for choice in option.choices:
            assert choice in EXAMPLE, (option.name, choice)
    assert from_mapping(data) == CollectorConfig()


WRONG_KIND: dict[type, Any] = {bool: 1, int: "1", float: "x", str: 1, tuple: [1], dict: {"A": "5"}}


@pytest.mark.parametrize("option", OPTIONS, ids=IDS)
def test_from_mapping_coerces_and_checks_each_setting_by_its_kind(option: Option) -> None:
    """The default given back is kept; a value of the wrong kind is one line naming the setting."""
    if option.default is not None:
        assert getattr(from_mapping({option.name: option.default}), option.name) == option.default
    with pytest.raises(ConfigError, match=option.name) as caught:
        from_mapping({option.name: WRONG_KIND[option.kind]})
    assert "\n" not in str(caught.value)
    if option.choices:
        with pytest.raises(ConfigError, match=f"{option.name} = 'nonsense': expected one of"):
            from_mapping({option.name: "nonsense"})


def test_only_what_the_command_line_gives_overrides_the_file() -> None:
    """Defaults from click are not "given": a file's value survives unless the flag is on the line."""
    group = cli
    assert isinstance(group, click.Group)
    collect = group.commands["collect"]
    with collect.make_context("collect", []) as ctx:
        assert _given({k: v for k, v in ctx.params.items() if k not in NOT_SETTINGS}) == {}
    args = ["--when", "H", "--no-default-routes", "--level", "TRACE=5", "--bind", "ipc://@x", "--text"]
    with collect.make_context("collect", args) as ctx:
        given = _given({k: v for k, v in ctx.params.items() if k not in NOT_SETTINGS})
    assert given == {
        "when": "H",
        "default_routes": False,
        "levels": {"TRACE": 5},
        "bind": ("ipc://@x",),
        "json": False,
    }


def test_a_new_setting_is_one_field() -> None:
    """One setting() field is all a new option needs: its name, kind and default come from the field."""

    @dataclasses.dataclass(frozen=True)
    class Settings:
        stats_file: str = setting("", "Write the counters as JSON to FILE at exit.", RECEIVE, metavar="FILE")
        at_time: str | None = setting(None, "A time.", FILES, samples=("00:00",))
        retries: int = setting(3, "Tries.", AMQP, check=at_least(1))

    stats_file, at_time, retries = table(Settings)
    assert (stats_file.name, stats_file.kind, stats_file.default) == ("stats_file", str, "")
    assert stats_file.flags == ("--stats-file",)
    assert (at_time.kind, at_time.default) == (str, None)
    assert retries.complaint(0) == "must be at least 1"
    assert retries.complaint(1) is None
    text = render_example(table(Settings), "# header\n")
    assert '# Write the counters as JSON to FILE at exit.\nstats_file = ""\n' in text
    assert '# at_time = "00:00"' in text
    assert tomllib.loads(text) == {"stats_file": "", "retries": 3}


@pytest.mark.parametrize(
    "command", ["collect", "bridge", "ship", "send", "tail", "keygen", "topology declare"]
)
def test_the_readme_lists_every_option_of_each_command(command: str) -> None:
    """README's CLI reference names every flag the command takes (its tables are written by hand)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    group: Any = cli
    for word in command.split():
        group = group.commands[word]
    names = [
        [flag for flag in (*param.opts, *param.secondary_opts) if flag.startswith("--")]
        for param in group.params
    ]
    assert names
    missing = [flags for flags in names if flags and not any(f"`{flag}" in readme for flag in flags)]
    assert not missing, f"README.md does not list {missing}"
