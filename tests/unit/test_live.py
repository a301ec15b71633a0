"""live.Filter: what ?level=&source=&q= mean for the web viewer's stream and search."""

from __future__ import annotations

from urllib.parse import parse_qs

import pytest

from zlogcollect.live import Filter, FilterError
from zlogcollect.wire import Levels

ERROR = {
    "source": "app2",
    "levelname": "ERROR",
    "levelno": 40,
    "subtopic": "db",
    "message": "Timeout after 30 s",
}
INFO = {
    "source": "app1",
    "levelname": "INFO",
    "levelno": 20,
    "subtopic": "",
    "message": "started",
    "host": "web01",
}


def test_the_empty_filter_takes_everything() -> None:
    assert Filter.parse().empty and Filter.parse().matches(ERROR) and Filter.parse().matches({})


@pytest.mark.parametrize(
    ("query", "takes_error", "takes_info"),
    [
        ("level=ERROR", True, False),
        ("level=warn", True, False),
        ("level=30", True, False),
        ("source=app1", False, True),
        ("source=app1,app2", True, True),
        ("source=app1&source=app2", True, True),
        ("q=timeout", True, False),
        ("q=!timeout", False, True),
        ("q=/^Time/", False, False),  # the text starts with the source: anchors apply to it
        ("q=/after \\d%2B s/", True, False),  # + is a space in a query string
        ("q=/TIMEOUT/i", True, False),
        ("q=/TIMEOUT/", False, False),
        ("q=web01", False, True),
        ("level=ERROR&q=!timeout", False, False),
    ],
)
def test_query_parameters(query: str, takes_error: bool, takes_info: bool) -> None:
    chosen = Filter.from_query(parse_qs(query))
    assert (chosen.matches(ERROR), chosen.matches(INFO)) == (takes_error, takes_info)


def test_custom_level_names() -> None:
    assert Filter.parse(level="NOTICE", levels=Levels({"NOTICE": 25})).min_level == 25


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"level": "LOUD"}, "not a level name"),
        ({"q": "/(/"}, "not a regular expression"),
        ({"q": "x" * 201}, "at most 200 characters"),
        ({"sources": [f"s{n}" for n in range(101)]}, "at most 100 sources"),
    ],
)
def test_bad_filters_are_one_line(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(FilterError, match=message) as caught:
        Filter.parse(**kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(caught.value)


def test_a_record_without_a_level_number_is_not_above_a_minimum() -> None:
    assert not Filter.parse(level="INFO").matches({"message": "raw line"})
