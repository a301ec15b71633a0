"""Settings: defaults, TOML keys mirroring flags, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from zlogcollect.config import EXAMPLE, CollectorConfig, ConfigError, from_mapping, load_file


def test_defaults_are_valid_and_documented() -> None:
    """The default config validates and the example file spells out the same values."""
    config = from_mapping({})
    assert config == CollectorConfig()
    assert config.bind == ("tcp://127.0.0.1:5558",)
    assert [r.target for r in config.routes] == ["{source}.log", "errors.log"]


def test_example_round_trips(tmp_path: Path) -> None:
    """The printed example loads back to the defaults."""
    path = tmp_path / "c.toml"
    path.write_text(EXAMPLE)
    assert from_mapping(load_file(str(path))) == CollectorConfig()


def test_collect_section_and_dashes(tmp_path: Path) -> None:
    """Keys may sit under [collect] and use dashes like the flags."""
    path = tmp_path / "c.toml"
    path.write_text('[collect]\nbackup-count = 3\nroute = "a.#=a.log"\n[collect.levels]\nTRACE = 5\n')
    config = from_mapping(load_file(str(path)))
    assert config.backup_count == 3
    assert config.route == ("a.#=a.log",)
    assert config.level_table.number("TRACE") == 5


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"nope": 1}, "unknown setting 'nope'"),
        ({"interval": "1"}, "interval = '1': expected a whole number"),
        ({"interval": True}, "expected a whole number"),
        ({"utc": 1}, "utc = 1: expected true or false"),
        ({"bind": [1]}, "expected a list of strings"),
        ({"bind": []}, "at least one endpoint"),
        ({"bind": ["5558"]}, "bind = '5558'"),
        ({"when": "X"}, "when = 'X'"),
        ({"backup_count": -1}, "backup_count"),
        ({"flush_interval": 0}, "flush_interval"),
        ({"flush_interval": 61}, "flush_interval"),
        ({"at_time": "noon"}, "at_time = 'noon'"),
        ({"log_level": "LOUD"}, "log_level"),
        ({"default_source": "../x"}, "default_source"),
        ({"levels": {"A.B": 5}}, "levels"),
        ({"levels": {"A": "5"}}, "levels.A"),
        ({"route": ["x"]}, "route:"),
        ({"errors_file": "../e.log"}, "route:"),
        ({"format": "%(zzz)d"}, "format:"),
        ({"default_routes": False}, "nothing would be written"),
        ({"max_record_bytes": 1}, "max_record_bytes"),
    ],
)
def test_bad_values_give_one_line_naming_the_setting(values: dict[str, object], needle: str) -> None:
    """Each bad value raises ConfigError with a single line that names the setting."""
    with pytest.raises(ConfigError) as caught:
        from_mapping(values)
    assert needle in str(caught.value)
    assert "\n" not in str(caught.value)


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    """Unreadable and unparseable files are config errors naming the file."""
    with pytest.raises(ConfigError, match=r"missing\.toml"):
        load_file(str(tmp_path / "missing.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_text("dir = \n")
    with pytest.raises(ConfigError, match=r"bad\.toml"):
        load_file(str(bad))


def test_json_skips_format_validation() -> None:
    """With json on, the text format is not used, so it is not checked."""
    assert from_mapping({"json": True}).json
