"""Loading CURVE keys for a client: files or Z85 text, one-line errors that never show a secret key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import zmq
import zmq.auth

from zlogcollect.keys import (
    ClientCurve,
    KeyFileError,
    client_certificate,
    client_curve,
    server_public_key,
)


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate pair (``NAME.key``, ``NAME.key_secret``) as zlogcollect keygen writes it."""
    public, secret = zmq.auth.create_certificates(tmp_path, "peer")
    return Path(public), Path(secret)


def keys_of(path: Path) -> tuple[bytes, bytes | None]:
    return zmq.auth.load_certificate(path)


def certificate(path: Path, public: bytes | str, secret: bytes | str | None = None) -> Path:
    """A certificate file in zmq.auth's layout with the given key lines."""

    def text(value: bytes | str) -> str:
        return value.decode() if isinstance(value, bytes) else value

    lines = ["metadata", "curve", f'    public-key = "{text(public)}"']
    if secret is not None:
        lines.append(f'    secret-key = "{text(secret)}"')
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_server_key_comes_from_a_key_file_a_secret_file_or_the_z85_text(pair: tuple[Path, Path]) -> None:
    """A .key file, the server's .key_secret file (its public key is taken) and the text give one key."""
    public_file, secret_file = pair
    expected, _ = keys_of(public_file)
    assert server_public_key(str(public_file)) == expected
    assert server_public_key(public_file) == expected  # a Path too
    assert server_public_key(str(secret_file)) == expected
    assert server_public_key(expected.decode()) == expected
    assert server_public_key(expected) == expected  # bytes: the Z85 text only


def test_the_client_certificate_is_its_key_pair(pair: tuple[Path, Path]) -> None:
    public_file, secret_file = pair
    assert client_certificate(secret_file) == keys_of(secret_file)
    with pytest.raises(
        KeyFileError, match=r"holds no secret key \(a public \.key file\); the client needs its \.key_secret"
    ):
        client_certificate(public_file)


def test_both_or_neither_and_the_message_names_the_setting(pair: tuple[Path, Path]) -> None:
    """Neither is no CURVE; one alone is an error naming both; a bad file is named by its setting."""
    public_file, secret_file = pair
    assert client_curve(None, None) is None
    curve = client_curve(str(public_file), str(secret_file))
    assert isinstance(curve, ClientCurve)
    assert (curve.server_key, curve.public_key, curve.secret_key) == (
        keys_of(public_file)[0],
        *keys_of(secret_file),
    )
    with pytest.raises(KeyFileError, match=r"^curve_server_key needs curve_client_cert too"):
        client_curve(str(public_file), None)
    with pytest.raises(KeyFileError, match=r"^--curve-client-cert needs --curve-server-key too"):
        client_curve(None, str(secret_file), ("--curve-server-key", "--curve-client-cert"))
    with pytest.raises(KeyFileError, match=r"^curve_client_cert: .*peer\.key: holds no secret key"):
        client_curve(str(public_file), str(public_file))
    with pytest.raises(KeyFileError, match=r"^curve_server_key: .*nothing\.key: No such file or directory"):
        client_curve(str(public_file.with_name("nothing.key")), str(secret_file))


def test_repr_never_shows_the_secret(pair: tuple[Path, Path]) -> None:
    curve = client_curve(str(pair[0]), str(pair[1]))
    assert curve is not None
    assert curve.secret_key.decode() not in repr(curve)
    assert curve.public_key.decode() in repr(curve)


def bad_files(folder: Path, public: bytes, secret: bytes) -> dict[str, tuple[Path, str]]:
    """Files that are no usable client certificate, and what the message says about each."""
    other_public, _ = zmq.curve_keypair()
    garbage = folder / "garbage.key_secret"
    garbage.write_bytes(b"\xff\xfe\x00 not a certificate \xc3(\n" * 100)
    huge = folder / "huge.key_secret"
    huge.write_bytes(b"public-key = " + b"x" * (1 << 20))
    empty = folder / "empty.key_secret"
    empty.write_bytes(b"")
    os.mkfifo(folder / "fifo.key_secret")
    (folder / "dir.key_secret").mkdir()
    return {
        "missing": (folder / "missing.key_secret", "No such file or directory"),
        "directory": (folder / "dir.key_secret", "is a directory"),
        "fifo": (folder / "fifo.key_secret", "not a regular file"),
        "garbage": (garbage, "no public-key line, so not a CURVE certificate"),
        "empty": (empty, "no public-key line"),
        "huge": (huge, "larger than 64 KiB"),
        "short public": (certificate(folder / "a", public[:-1], secret), "public key is not 40 Z85"),
        "short secret": (certificate(folder / "b", public, secret[:-1]), "secret key is not 40 Z85"),
        "long secret": (certificate(folder / "c", public, secret + b"0"), "secret key is not 40 Z85"),
        "not z85": (certificate(folder / "d", public, secret[:-1] + b"~"), "secret key is not 40 Z85"),
        # 8 groups of '#####' are 40 Z85 characters but too large for 32 bits each.
        "overflow": (certificate(folder / "e", public, "#" * 40), "secret key is not 40 Z85"),
        "foreign public": (certificate(folder / "f", other_public, secret), "does not belong to its secret"),
    }


def test_bad_client_certificates_are_one_line_without_the_secret(
    tmp_path: Path, pair: tuple[Path, Path]
) -> None:
    """Each bad file is a KeyFileError (a ValueError) naming the file, on one line, never with the secret."""
    public, secret = keys_of(pair[1])
    assert secret is not None
    for case, (path, words) in bad_files(tmp_path, public, secret).items():
        with pytest.raises(KeyFileError) as caught:
            client_certificate(path)
        message = str(caught.value)
        assert isinstance(caught.value, ValueError)
        assert words in message, (case, message)
        assert message.startswith(str(path)), (case, message)
        assert "\n" not in message, case
        for part in (secret, secret[:-1], secret[1:], secret[:20]):
            assert part.decode() not in message, case


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_an_unreadable_certificate_says_so(pair: tuple[Path, Path]) -> None:
    pair[1].chmod(0)
    with pytest.raises(KeyFileError, match="Permission denied"):
        client_certificate(pair[1])


def test_a_bad_server_key_value_is_never_echoed_unless_it_is_a_file_name(
    tmp_path: Path, pair: tuple[Path, Path]
) -> None:
    """Wrong-length Z85 text (perhaps a secret with a typo) is described, not shown; a file name is shown."""
    _, secret = keys_of(pair[1])
    assert secret is not None
    for value in (secret[:-1].decode(), secret.decode() + "x", "#" * 40, "short"):
        with pytest.raises(KeyFileError) as caught:
            server_public_key(value)
        message = str(caught.value)
        assert f"a value of {len(value)} characters that is neither an existing file" in message
        assert value not in message and "\n" not in message
    with pytest.raises(KeyFileError, match="bytes given"):
        server_public_key(secret[:-1])
    with pytest.raises(KeyFileError, match="empty"):
        server_public_key("")
    missing = tmp_path / "srv.key"
    with pytest.raises(KeyFileError, match=f"^{missing}: No such file or directory$"):
        server_public_key(str(missing))
    with pytest.raises(KeyFileError, match="no public-key line"):
        server_public_key(str(bad_files(tmp_path, b"", b"")["garbage"][0]))
    odd = tmp_path / "line\nbreak.key"
    with pytest.raises(KeyFileError) as caught:
        server_public_key(str(odd))
    assert "\n" not in str(caught.value) and "line\\nbreak.key" in str(caught.value)
