"""Hostile or broken input on raw sockets: the server must answer with the
right stream or stanza error, close what must be closed, and keep serving."""

from __future__ import annotations

import subprocess
import time

import pytest

from rawxmpp import (CLIENT_NS, SASL_NS, STANZAS_ERR_NS, RawClient, error_condition,
                     q, stream_header)

RESTRICTED = ("restricted-xml", "not-well-formed")


@pytest.fixture
def raw(server):
    conns: list[RawClient] = []

    def make(direct_tls: bool = False) -> RawClient:
        port = server.direct_port if direct_tls else server.starttls_port
        conn = RawClient("127.0.0.1", port, ssl_context=server.client_ssl_context(),
                         direct_tls=direct_tls)
        conns.append(conn)
        return conn

    yield make
    for conn in conns:
        conn.close()


def logged_in(server, raw) -> tuple[RawClient, str]:
    account = server.new_account("raw")
    conn = raw()
    jid = conn.login(account.user, account.password)
    return conn, jid


def assert_error_then_close(conn: RawClient, allowed: tuple[str, ...]) -> str:
    cond = conn.expect_stream_error()
    assert cond in allowed, f"stream error <{cond}/>, expected one of {allowed}"
    assert conn.wait_closed(5), "server did not close the connection after the stream error"
    assert conn.stream_ended, "server closed TCP without </stream:stream>"
    return cond


def assert_still_serving(server, raw) -> None:
    server.assert_alive()
    conn, jid = logged_in(server, raw)
    answer = conn.iq("<ping xmlns='urn:xmpp:ping'/>", to="localhost", id_="alive")
    assert answer.get("type") == "result", "server did not answer a ping after bad input"


@pytest.mark.parametrize("stage", ["before-tls", "authenticated"])
def test_malformed_xml_gets_not_well_formed(server, raw, stage):
    if stage == "before-tls":
        conn = raw()
        conn.open_stream()
    else:
        conn, _ = logged_in(server, raw)
    conn.send("<message to='x@localhost'><body>oops</mesage>")
    assert_error_then_close(conn, ("not-well-formed",))
    assert_still_serving(server, raw)


def test_garbage_bytes_get_not_well_formed(server, raw):
    conn, _ = logged_in(server, raw)
    conn.send(b"<message><<\x00>>")
    assert_error_then_close(conn, ("not-well-formed",))
    assert_still_serving(server, raw)


@pytest.mark.parametrize("complete", [False, True], ids=["unterminated", "complete"])
def test_oversized_stanza_gets_policy_violation(server, raw, complete):
    conn, jid = logged_in(server, raw)
    # The limit is 64 KiB; this body alone is 80 KiB.
    data = f"<message to='{jid}' type='chat'><body>" + "a" * (80 * 1024)
    if complete:
        data += "</body></message>"
    try:
        conn.send(data)
    except OSError:
        pass  # the server may already have closed while we were writing
    assert_error_then_close(conn, ("policy-violation",))
    assert_still_serving(server, raw)


def test_stanza_below_limit_is_delivered(server, raw):
    conn, jid = logged_in(server, raw)
    body = "b" * (32 * 1024)
    conn.send(f"<message to='{jid}' type='chat' id='big'><body>{body}</body></message>")
    msg = conn.read_element()
    assert msg.tag == q(CLIENT_NS, "message"), msg.tag
    assert msg.get("type") == "chat"
    assert msg.findtext(q(CLIENT_NS, "body")) == body


RESTRICTED_CASES = {
    "doctype-before-stream": (
        "fresh",
        "<?xml version='1.0'?><!DOCTYPE stream:stream [<!ENTITY x 'boom'>]>"
        "<stream:stream to='localhost' version='1.0' xmlns='jabber:client' "
        "xmlns:stream='http://etherx.jabber.org/streams'>"),
    "doctype-after-starttls": ("tls", None),
    "entity-reference": (
        "auth", "<message to='x@localhost'><body>&xxe;</body></message>"),
    "processing-instruction": ("auth", "<?evil data?>"),
    "processing-instruction-in-stanza": (
        "auth", "<message to='x@localhost'><?evil data?><body>x</body></message>"),
    "comment": ("auth", "<!-- a comment -->"),
}


@pytest.mark.parametrize("case", list(RESTRICTED_CASES))
def test_restricted_xml_closes_stream_and_server_survives(server, raw, case):
    stage, payload = RESTRICTED_CASES[case]
    if stage == "fresh":
        conn = raw()
    elif stage == "tls":
        conn = raw()
        conn.starttls(restart=False)
        # The restarted stream's header carries a DTD with entity
        # expansion (billion-laughs style).
        payload = (
            "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>"
            "<!ENTITY lol2 '&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;'>]>"
            "<stream:stream to='localhost' version='1.0' xmlns='jabber:client' "
            "xmlns:stream='http://etherx.jabber.org/streams'>")
    else:
        conn, _ = logged_in(server, raw)
    conn.send(payload)
    assert_error_then_close(conn, RESTRICTED)
    assert_still_serving(server, raw)


@pytest.mark.parametrize("stanza", [
    "<message to='someone@localhost' type='chat'><body>hi</body></message>",
    "<presence/>",
    "<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>",
], ids=["message", "presence", "iq"])
def test_stanza_before_auth_gets_not_authorized(server, raw, stanza):
    conn = raw()
    conn.starttls()
    conn.send(stanza)
    assert_error_then_close(conn, ("not-authorized",))


def test_malformed_to_jid_gets_jid_malformed(server, raw):
    conn, jid = logged_in(server, raw)
    conn.send("<message to='a@b@c' id='bad1' type='chat'><body>x</body></message>")
    answer = conn.read_element()
    assert answer.tag == q(CLIENT_NS, "message"), answer.tag
    assert answer.get("type") == "error"
    assert answer.get("id") == "bad1"
    error = answer.find(q(CLIENT_NS, "error"))
    assert error is not None, "error stanza without <error/>"
    assert error_condition(error, STANZAS_ERR_NS) == "jid-malformed"
    assert error.get("type") == "modify"
    # The stream survives a stanza error.
    pong = conn.iq("<ping xmlns='urn:xmpp:ping'/>", to="localhost", id_="p2")
    assert pong.get("type") == "result"


def test_iq_with_malformed_to_gets_jid_malformed(server, raw):
    conn, jid = logged_in(server, raw)
    answer = conn.iq("<ping xmlns='urn:xmpp:ping'/>", to="@@/", id_="badto")
    assert answer.get("type") == "error"
    error = answer.find(q(CLIENT_NS, "error"))
    assert error is not None
    assert error_condition(error, STANZAS_ERR_NS) == "jid-malformed"


def test_wrong_password_failure_is_delayed(server, raw):
    account = server.new_account("slow")
    conn = raw()
    conn.starttls()
    started = time.monotonic()
    conn.send_plain_auth(account.user, "wrong password")
    answer = conn.read_element(timeout=10)
    elapsed = time.monotonic() - started
    assert answer.tag == q(SASL_NS, "failure"), answer.tag
    assert error_condition(answer, SASL_NS) == "not-authorized"
    # failure_delay = 200ms in the test config
    assert elapsed >= 0.19, f"failure arrived after {elapsed:.3f}s"
    assert elapsed < 5, f"failure took {elapsed:.3f}s"


def test_retry_after_wrong_password_on_same_stream(server, raw):
    # RFC 6120 §6.4.5: the server SHOULD allow a reasonable number of retries.
    account = server.new_account("retry")
    conn = raw()
    conn.starttls()
    conn.send_plain_auth(account.user, "nope")
    answer = conn.read_element(timeout=10)
    assert answer.tag == q(SASL_NS, "failure")
    conn.auth_plain(account.user, account.password)
    jid = conn.bind("second-try")
    assert jid == f"{account.jid}/second-try"


def test_bad_config_file_names_file_and_each_bad_key(server, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(
        "[general]\n"
        f"data_dir = \"{tmp_path / 'data'}\"\n"
        "[limits]\n"
        "max_depth = 1\n"
        "[auth]\n"
        "scram_iterations = 10\n")
    res = subprocess.run([str(server.binary), "serve", "--config", str(bad)],
                         capture_output=True, text=True, timeout=15)
    assert res.returncode != 0, f"tern serve accepted a bad config:\n{res.stderr}"
    assert "bad.toml" in res.stderr, res.stderr
    assert "max_depth" in res.stderr, res.stderr
    assert "scram_iterations" in res.stderr, res.stderr


def test_unparsable_config_file_is_rejected(server, tmp_path):
    bad = tmp_path / "broken.toml"
    bad.write_text("[general\ndomains = [\"localhost\"\n")
    res = subprocess.run([str(server.binary), "serve", "--config", str(bad)],
                         capture_output=True, text=True, timeout=15)
    assert res.returncode != 0
    assert "broken.toml" in res.stderr, res.stderr


def test_stream_header_for_unknown_host_gets_host_unknown(server, raw):
    conn = raw()
    conn.send(stream_header("not-served.test"))
    assert_error_then_close(conn, ("host-unknown",))
