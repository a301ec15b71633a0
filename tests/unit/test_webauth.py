"""webauth: the token or basic credentials of --http, from a file or the environment, never shown."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from zlogcollect.webauth import Auth, AuthError, load_auth, read_auth_file, world_readable

SECRET = "s3cret-Value"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_no_credentials_anywhere_is_auth_off() -> None:
    assert load_auth("", {}) is None


def test_a_token_from_the_environment() -> None:
    auth = load_auth("", {"ZLOGCOLLECT_HTTP_TOKEN": SECRET})
    assert auth is not None and auth.kinds == "token" and not auth.basic
    assert auth.allows(f"Bearer {SECRET}") and auth.allows(f"bearer   {SECRET} ")
    assert not auth.allows(f"Bearer {SECRET}x") and not auth.allows(None) and not auth.allows("")
    assert not auth.allows(basic("u", SECRET))  # a token is not a basic password
    assert auth.challenges() == [("WWW-Authenticate", 'Bearer realm="zlogcollect"')]


def test_basic_credentials_from_the_environment() -> None:
    auth = load_auth("", {"ZLOGCOLLECT_HTTP_USER": "ops", "ZLOGCOLLECT_HTTP_PASSWORD": "pa ss:wörd"})
    assert auth is not None and auth.basic and auth.kinds == "basic"
    assert auth.allows(basic("ops", "pa ss:wörd"))
    assert not auth.allows(basic("ops", "pa ss:word")) and not auth.allows(basic("op", "pa ss:wörd"))
    assert not auth.allows("Basic !!!not-base64") and not auth.allows("Basic " + "A" * 10_000)
    assert not auth.allows("Basic " + base64.b64encode(b"no colon").decode())
    assert not auth.allows(f"Bearer {SECRET}")
    assert auth.challenges()[0] == ("WWW-Authenticate", 'Basic realm="zlogcollect", charset="UTF-8"')


def test_a_file_with_both_kinds(tmp_path: Path) -> None:
    path = tmp_path / "auth"
    path.write_text(f"# who may read the logs\n\ntoken = {SECRET}\nuser=ops\npassword=hunter2\n")
    auth = read_auth_file(str(path))
    assert auth.kinds == "token or basic"
    assert auth.allows(f"Bearer {SECRET}") and auth.allows(basic("ops", "hunter2"))
    assert len(auth.challenges()) == 2
    assert SECRET not in repr(auth) and "hunter2" not in repr(auth)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("", "holds no token= nor user="),
        ("token=\n", "token is empty"),
        ("user=ops\n", "user is given without password"),
        ("password=SECRETVALUE\n", "password is given without user"),
        ("token=a b\n", "spaces or control characters"),
        ("user=a:b\npassword=SECRETVALUE\n", "user holds ':'"),
        ("token=x\ntoken=y\n", "line 2: token is given twice"),
        ("SECRETVALUE\n", "line 1: expected token=, user= or password="),
        ("secret=SECRETVALUE\n", "line 1: expected token="),
    ],
)
def test_a_bad_file_is_one_line_without_the_secret(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "auth"
    path.write_text(content)
    with pytest.raises(AuthError, match=needle) as caught:
        load_auth(str(path), {})
    assert "\n" not in str(caught.value) and "SECRETVALUE" not in str(caught.value)


def test_an_unreadable_file_binary_file_or_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AuthError, match="cannot read it: No such file"):
        load_auth(str(tmp_path / "missing"), {})
    with pytest.raises(AuthError, match=r"not a regular file|cannot read it"):
        load_auth(str(tmp_path), {})
    (tmp_path / "bin").write_bytes(b"token=\xff\xfe")
    with pytest.raises(AuthError, match="not UTF-8"):
        load_auth(str(tmp_path / "bin"), {})
    (tmp_path / "big").write_bytes(b"#" * 100_000)
    with pytest.raises(AuthError, match="larger than 64 KiB"):
        load_auth(str(tmp_path / "big"), {})


def test_the_environment_and_a_file_together_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "auth"
    path.write_text("token=abc\n")
    with pytest.raises(AuthError, match="one place") as caught:
        load_auth(str(path), {"ZLOGCOLLECT_HTTP_TOKEN": "SECRETVALUE"})
    assert "SECRETVALUE" not in str(caught.value)


def test_an_empty_environment_variable_is_refused() -> None:
    with pytest.raises(AuthError, match="the environment: token is empty"):
        load_auth("", {"ZLOGCOLLECT_HTTP_TOKEN": ""})


def test_world_readable(tmp_path: Path) -> None:
    path = tmp_path / "auth"
    path.write_text("token=x\n")
    path.chmod(0o600)
    assert not world_readable(str(path))
    path.chmod(0o644)
    assert world_readable(str(path))


def test_a_hostile_header_is_simply_refused() -> None:
    auth = Auth(token=b"t")
    for header in ("Bearer \udcff", "Bearer", "\x00\x01", "Negotiate abc", "Bearer " + "t" * 5000):
        assert not auth.allows(header)
