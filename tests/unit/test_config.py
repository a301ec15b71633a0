"""Settings: defaults, TOML keys mirroring flags, and one-line errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from zlogcollect.config import (
    EXAMPLE,
    CollectorConfig,
    ConfigError,
    from_mapping,
    load_file,
    node_urls,
    redact,
)


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
    assert config.level_table.lookup("TRACE") == ("TRACE", 5)


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
        ({"flush_delay": -0.1}, "flush_delay"),
        ({"flush_delay": 61}, "flush_delay"),
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
        ({"bind": ["tcp://nonsense"]}, "tcp://HOST:PORT"),
        ({"bind": ["tcp://127.0.0.1"]}, "tcp://HOST:PORT"),
        ({"bind": ["tcp://127.0.0.1:55x8"]}, "tcp://HOST:PORT"),
        ({"bind": ["tcp://:5558"]}, "tcp://HOST:PORT"),
        ({"bind": ["tcp://a b:5558"]}, "tcp://HOST:PORT"),
        ({"bind": ["ipc://"]}, "bind = 'ipc://'"),
        ({"stats_interval": -1}, "stats_interval"),
        ({"publish": ["tcp://nonsense"]}, "publish = 'tcp://nonsense': expected tcp://HOST:PORT"),
        ({"publish": ["5559"]}, "publish = '5559'"),
        (
            {"publish": ["tcp://127.0.0.1:70000"]},
            "publish = 'tcp://127.0.0.1:70000': port 70000 is out of range",
        ),
        ({"publish": "ipc://"}, "publish = 'ipc://'"),
        ({"publish_hwm": 0}, "publish_hwm"),
        ({"amqp_url_file": "/nonexistent/amqp-url"}, "amqp_url_file"),
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


@pytest.mark.parametrize(
    "endpoint",
    [
        "tcp://127.0.0.1:5558",
        "tcp://*:5558",
        "tcp://*:*",
        "tcp://eth0:5558",
        "tcp://logs.example.com:5558",
        "tcp://[::1]:5558",
        "ipc:///run/zlogcollect/log.sock",
        "ipc://@abstract",
        "inproc://x",
    ],
)
def test_well_formed_endpoints_are_accepted(endpoint: str) -> None:
    """Every endpoint shape libzmq binds stays valid."""
    assert from_mapping({"bind": [endpoint]}).bind == (endpoint,)


def test_amqp_url_from_a_file_first_line_stripped(tmp_path: Path) -> None:
    """amqp_url_file gives the URL from its first line; the file may hold more (comments, a newline)."""
    path = tmp_path / "amqp-url"
    path.write_text("  amqp://user:s3cret@broker:5672/%2F  \nignored\n")
    config = from_mapping({"amqp_url_file": str(path)})
    assert config.amqp_url == "amqp://user:s3cret@broker:5672/%2F"
    assert "s3cret" not in redact(config.amqp_url)


@pytest.mark.parametrize("content", ["", "\n", "   \nsecond line\n"])
def test_empty_amqp_url_file_is_a_config_error(tmp_path: Path, content: str) -> None:
    """An empty first line is an error naming the setting, not a silent "AMQP off"."""
    path = tmp_path / "amqp-url"
    path.write_text(content)
    with pytest.raises(ConfigError, match="amqp_url_file") as caught:
        from_mapping({"amqp_url_file": str(path)})
    assert "\n" not in str(caught.value)


def test_amqp_url_and_url_file_together_are_refused(tmp_path: Path) -> None:
    """Two sources for one secret in the same place is ambiguous: say so."""
    path = tmp_path / "amqp-url"
    path.write_text("amqp://a:b@c/%2F\n")
    with pytest.raises(ConfigError, match="not both"):
        from_mapping({"amqp_url": "amqp://x@y/%2F", "amqp_url_file": str(path)})


def test_a_bad_url_in_the_file_never_shows_its_password(tmp_path: Path) -> None:
    """The URL read from the file is validated like --amqp-url, and the error hides the password."""
    path = tmp_path / "amqp-url"
    path.write_text("http://user:s3cret@broker/\n")
    with pytest.raises(ConfigError, match="amqp_url") as caught:
        from_mapping({"amqp_url_file": str(path)})
    assert "s3cret" not in str(caught.value)


def test_a_flag_wins_over_the_other_way_of_giving_the_url_in_the_file() -> None:
    """--amqp-url (or its env var) overrides amqp_url_file from TOML, and --amqp-url-file overrides amqp_url."""
    from zlogcollect.cli import _merge_url_sources

    from_file = {"amqp_url_file": "/etc/zlogcollect/amqp-url", "dir": "x"}
    assert _merge_url_sources(from_file, {"amqp_url": "amqp://a@b/"}) == {
        "dir": "x",
        "amqp_url": "amqp://a@b/",
    }
    assert _merge_url_sources({"amqp-url": "amqp://a@b/"}, {"amqp_url_file": "f"}) == {"amqp_url_file": "f"}
    both = {"amqp_url": "amqp://a@b/", "amqp_url_file": "f"}
    assert _merge_url_sources({}, both) == both  # both as flags: from_mapping refuses that


def test_amqp_nodes_take_the_urls_credentials_vhost_and_scheme() -> None:
    """--amqp-node HOST:PORT: the bridge's next nodes, each the URL with its host and port replaced."""
    url = "amqps://user:s%40cret@rabbit1:5671/logs?heartbeat=10"
    assert node_urls(url, ("rabbit2:5671", "[::1]:5672")) == [
        url,
        "amqps://user:s%40cret@rabbit2:5671/logs?heartbeat=10",
        "amqps://user:s%40cret@[::1]:5672/logs?heartbeat=10",
    ]
    assert node_urls("amqp://rabbit1/%2F", ("r2:5672",)) == ["amqp://rabbit1/%2F", "amqp://r2:5672/%2F"]
    config = from_mapping({"amqp_url": url, "amqp_node": ["rabbit2:5671"]})
    assert config.amqp_node == ("rabbit2:5671",)


@pytest.mark.parametrize(
    "node", ["rabbit2", "rabbit2:", ":5672", "rabbit2:99999", "u:p@rabbit2:5672", "a b:1"]
)
def test_a_bad_amqp_node_is_one_config_error(node: str) -> None:
    with pytest.raises(ConfigError, match=r"amqp_node = .*: expected HOST:PORT"):
        from_mapping({"amqp_url": "amqp://u:s3cret@rabbit1/%2F", "amqp_node": [node]})


def test_amqp_nodes_need_the_url() -> None:
    with pytest.raises(ConfigError, match="give the first node with amqp_url"):
        from_mapping({"amqp_node": ["rabbit2:5672"]})


def test_the_writer_takes_its_queues_nodes_and_prefetch() -> None:
    config = from_mapping(
        {
            "from_amqp": "amqp://zlog:pw@rabbit1:5672/%2F",
            "queue": ["zlogcollect.shard.0", "zlogcollect.shard.1"],
            "amqp_node": ["rabbit2:5672"],
            "prefetch": 500,
        }
    )
    assert config.queue == ("zlogcollect.shard.0", "zlogcollect.shard.1")
    assert config.amqp_node == ("rabbit2:5672",)
    assert config.prefetch == 500
    assert config.dedup_window == 100_000


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"from_amqp": "amqp://g:secretpw@h/%2F"}, "from_amqp: give the queue(s) to consume with --queue NAME"),
        ({"from_amqp": "http://g:secretpw@h/", "queue": ["q"]}, "from_amqp = 'http://g:***@h/': expected amqp://"),
        ({"from_amqp": "amqp://g:secretpw@h/%2F", "queue": ["q"], "prefetch": 70000}, "prefetch = 70000"),
        ({"from_amqp": "amqp://g:secretpw@h/%2F", "queue": [""]}, "queue = '': expected a queue name"),
        ({"from_amqp": "amqp://g:secretpw@h/%2F", "queue": ["q"], "publish": ["tcp://127.0.0.1:5559"]}, "--publish"),
        ({"from_amqp": "amqp://g:secretpw@h/%2F", "queue": ["q"], "amqp_node": ["nocolon"]}, "amqp_node = 'nocolon'"),
        ({"queue": ["q"]}, "queue: the queues to consume need from_amqp"),
        ({"from_amqp": "amqp://g:secretpw@h/%2F", "queue": ["q"], "dedup_window": 0}, "dedup_window = 0"),
        ({"from_amqp": "amqp://g:secretpw@h/%2F", "queue": ["q"], "bind": ["tcp://127.0.0.1:6000"]}, "(--bind)"),
        ({"from_amqp": "amqp://g:secretpw@h/%2F", "queue": ["q"], "allow_ip": ["10.0.0.0/8"]}, "no socket to guard"),
    ],
)  # fmt: skip
def test_bad_writer_settings_are_one_config_error_without_the_password(
    values: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        from_mapping(values)
    assert "secretpw" not in str(caught.value)
