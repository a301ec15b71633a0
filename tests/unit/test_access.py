"""access: the allow-list directory, --allow-ip, the ZAP verdicts, and the ZAP replies built from them."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
import zmq
import zmq.auth
from zmq.utils import z85

from zlogcollect.access import (
    AccessError,
    Gate,
    Policy,
    address_allowed,
    load_allow_list,
    load_secret_certificate,
    parse_networks,
)
from zlogcollect.zap import ZapServer


def make(folder: Path, name: str) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    public, secret = zmq.auth.create_certificates(folder, name)
    return Path(public), Path(secret)


def raw_key(path: Path) -> bytes:
    return z85.decode(zmq.auth.load_certificate(path)[0])


def test_allow_list_names_each_key_by_its_file(tmp_path: Path) -> None:
    app1, _ = make(tmp_path, "app1")
    app2, _ = make(tmp_path, "app2")
    (tmp_path / "notes.txt").write_text("not a key")
    allow = load_allow_list(str(tmp_path))
    assert dict(allow.names) == {raw_key(app1): "app1", raw_key(app2): "app2"}
    assert len(allow) == 2 and allow.duplicates == ()


def test_the_same_key_twice_keeps_the_first_name(tmp_path: Path) -> None:
    app1, _ = make(tmp_path, "app1")
    (tmp_path / "zz-copy.key").write_bytes(app1.read_bytes())
    allow = load_allow_list(str(tmp_path))
    assert list(allow.names.values()) == ["app1"] and allow.duplicates == ("zz-copy.key",)


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        (b"", "no public-key line, so not a CURVE certificate"),
        (b'public-key = "short"\n', "its public key is not 40 Z85 characters"),
        (b'public-key = "' + b"~" * 40 + b'"\n', "its public key is not 40 Z85 characters"),
    ],
)
def test_a_bad_key_file_fails_the_load_and_names_the_file(
    tmp_path: Path, content: bytes, complaint: str
) -> None:
    make(tmp_path, "good")
    (tmp_path / "bad.key").write_bytes(content)
    with pytest.raises(AccessError, match=r"bad\.key") as caught:
        load_allow_list(str(tmp_path))
    assert complaint in str(caught.value)


def test_an_empty_or_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AccessError, match=r"no \*\.key public key files"):
        load_allow_list(str(tmp_path))
    with pytest.raises(AccessError, match="No such file"):
        load_allow_list(str(tmp_path / "missing"))


def test_secret_certificate_errors_never_show_the_key(tmp_path: Path) -> None:
    public, secret = make(tmp_path, "server")
    assert load_secret_certificate(str(secret))[0] == zmq.auth.load_certificate(public)[0]
    with pytest.raises(AccessError, match="holds no secret key"):
        load_secret_certificate(str(public))
    text = secret.read_text().replace('secret-key = "', 'secret-key = "!!')
    broken = tmp_path / "broken.key_secret"
    broken.write_text(text)
    with pytest.raises(AccessError) as caught:
        load_secret_certificate(str(broken))
    secret_text = zmq.auth.load_certificate(secret)[1]
    assert secret_text is not None and secret_text.decode() not in str(caught.value)
    big = tmp_path / "big.key_secret"
    big.write_bytes(b"#" * 100_000)
    with pytest.raises(AccessError, match="larger than 64 KiB"):
        load_secret_certificate(str(big))
    with pytest.raises(AccessError, match="is a directory, not a certificate file"):
        load_secret_certificate(str(tmp_path))


def test_a_secret_certificate_whose_keys_do_not_match_is_refused(tmp_path: Path) -> None:
    """The collector's certificate is read as a client's is (zlogcollect.certfile): a public-key line
    taken from another certificate is refused, naming the file and neither key."""
    _, secret = make(tmp_path, "server")
    other, _ = make(tmp_path, "other")
    other_public = zmq.auth.load_certificate(other)[0]
    own_public, own_secret = zmq.auth.load_certificate(secret)
    assert own_secret is not None
    mixed = tmp_path / "mixed.key_secret"
    mixed.write_text(secret.read_text().replace(own_public.decode(), other_public.decode()))
    with pytest.raises(
        AccessError, match=r"curve_secret '.*mixed\.key_secret': its public key does not belong"
    ) as caught:
        load_secret_certificate(str(mixed))
    assert own_secret.decode() not in str(caught.value) and other_public.decode() not in str(caught.value)


def test_a_policy_never_shows_its_secret() -> None:
    policy = Policy(Gate(None), (b"P" * 40, b"S" * 40))
    assert "SSSS" not in repr(policy) and policy.curve


def test_networks_and_addresses() -> None:
    networks = parse_networks(["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"])
    assert networks[1] == ipaddress.ip_network("192.0.2.7/32")
    assert address_allowed("10.1.2.3", networks)
    assert address_allowed("::ffff:10.1.2.3", networks)  # an IPv4 peer on an IPv6 socket
    assert address_allowed("2001:db8::1", networks)
    assert not address_allowed("127.0.0.1", networks)
    assert not address_allowed("not an address", networks)
    assert address_allowed("", networks)  # ipc:// peers have no address
    assert address_allowed("127.0.0.1", ())
    with pytest.raises(AccessError, match=r"allow_ip = '10\.0\.0\.300/8'"):
        parse_networks(["10.0.0.300/8"])


def test_gate_verdicts(tmp_path: Path) -> None:
    app1, _ = make(tmp_path, "app1")
    gate = Gate(load_allow_list(str(tmp_path)), parse_networks(["127.0.0.0/8"]))
    key = raw_key(app1)
    assert gate.decide(b"CURVE", "127.0.0.1", [key]).user_id == "app1"
    assert gate.decide(b"CURVE", "127.0.0.1", [b"\0" * 32]).reason == "unknown_key"
    assert gate.decide(b"CURVE", "10.0.0.1", [key]).reason == "ip_not_allowed"
    assert gate.decide(b"NULL", "127.0.0.1", []).reason == "no_curve"
    assert gate.decide(b"PLAIN", "127.0.0.1", [b"u", b"p"]).reason == "bad_mechanism"
    assert Gate(None, parse_networks(["127.0.0.1"])).decide(b"NULL", "127.0.0.1", []).allowed


def test_zap_replies(tmp_path: Path) -> None:
    """Built from a request as the ROUTER receives it; a refusal is 300 (the client retries later)."""
    app1, _ = make(tmp_path, "app1")
    refused: list[tuple[str, str, str]] = []
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        server = ZapServer(context, {"d": Gate(load_allow_list(str(tmp_path)))}, lambda *a: refused.append(a))
        head = [b"id", b""]
        ok = server.answer([*head, b"1.0", b"7", b"d", b"127.0.0.1", b"", b"CURVE", raw_key(app1)])
        assert ok == [*head, b"1.0", b"7", b"200", b"OK", b"app1", b""]
        no = server.answer([*head, b"1.0", b"8", b"d", b"127.0.0.1", b"", b"CURVE", b"\1" * 32])
        assert no is not None and no[4:7] == [b"300", b"unknown_key", b""]
        other = server.answer([*head, b"1.0", b"9", b"elsewhere", b"127.0.0.1", b"", b"CURVE", b"\1" * 32])
        assert other is not None and other[5] == b"unknown_domain"
        assert server.answer([b"id", b"", b"1.0"]) is None
        assert server.answer([b"no delimiter"]) is None
        assert refused == [("d", "unknown_key", "127.0.0.1"), ("elsewhere", "unknown_domain", "127.0.0.1")]
    finally:
        context.term()


def test_a_certificate_name_with_controls_or_a_newline_is_escaped_once(tmp_path: Path) -> None:
    """The name becomes the peer on every line and in file names: never a raw newline or escape."""
    public, _ = make(tmp_path / "made", "app")
    (tmp_path / "allow").mkdir()
    (tmp_path / "allow" / "evil\x1b[2J\nforged\t.key").write_bytes(public.read_bytes())
    (name,) = load_allow_list(str(tmp_path / "allow")).names.values()
    assert name == "evil\\x1b[2J\\nforged\\t" and name.isprintable()
