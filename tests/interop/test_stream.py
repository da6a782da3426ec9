"""Stream negotiation details checked on raw sockets: headers, STARTTLS
being required, the advertised SASL mechanisms, XEP-0368 direct TLS,
resource binding and the legacy optional session."""

from __future__ import annotations

import pytest

from rawxmpp import (BIND_NS, CLIENT_NS, SASL_NS, SESSION_NS, STREAM_NS, TLS_NS,
                     ProtocolError, RawClient, StreamClosed, q)

EXPECTED_MECHANISMS = ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256",
                       "SCRAM-SHA-1-PLUS", "SCRAM-SHA-1", "PLAIN"]


@pytest.fixture
def raw(server):
    conns: list[RawClient] = []

    def make(direct_tls: bool = False, domain: str = "localhost") -> RawClient:
        port = server.direct_port if direct_tls else server.starttls_port
        conn = RawClient("127.0.0.1", port, domain=domain,
                         ssl_context=server.client_ssl_context(),
                         direct_tls=direct_tls)
        conns.append(conn)
        return conn

    yield make
    for conn in conns:
        conn.close()


@pytest.mark.parametrize("domain", ["localhost", "example.test"])
def test_stream_header_answers_for_requested_domain(raw, domain):
    conn = raw(domain=domain)
    conn.open_stream()
    header = conn.stream_open
    assert header.tag == q(STREAM_NS, "stream")
    assert header.get("from") == domain
    assert header.get("version") == "1.0"
    assert header.get("id"), "stream header without an id"


def test_starttls_is_required_before_auth(server, raw):
    conn = raw()
    features = conn.open_stream()
    starttls = features.find(q(TLS_NS, "starttls"))
    assert starttls is not None, "STARTTLS not offered"
    assert starttls.find(q(TLS_NS, "required")) is not None, "STARTTLS not marked required"

    # Authenticating in the clear must not succeed.
    account = server.new_account("clear")
    conn.send_plain_auth(account.user, account.password)
    try:
        answer = conn.read_element()
    except StreamClosed:
        return
    assert answer.tag != q(SASL_NS, "success"), "SASL succeeded without TLS"


def test_mechanisms_advertised_in_configured_order(raw):
    conn = raw()
    features = conn.starttls()
    assert conn.mechanisms(features) == EXPECTED_MECHANISMS
    assert features.find(q(TLS_NS, "starttls")) is None, "STARTTLS offered twice"


def test_direct_tls_port_offers_sasl_without_starttls(raw):
    conn = raw(direct_tls=True)
    features = conn.open_stream()
    assert features.find(q(TLS_NS, "starttls")) is None
    assert conn.mechanisms(features) == EXPECTED_MECHANISMS


def test_bind_and_legacy_session(server, raw):
    account = server.new_account("bind")
    conn = raw()
    conn.starttls()
    features = conn.auth_plain(account.user, account.password)
    assert features.find(q(BIND_NS, "bind")) is not None, "bind not offered"
    assert features.find(q(SASL_NS, "mechanisms")) is None, "SASL offered after auth"
    session = features.find(q(SESSION_NS, "session"))
    assert session is not None, "legacy session feature not advertised"
    assert session.find(q(SESSION_NS, "optional")) is not None, "session not optional"

    jid = conn.bind("desk")
    assert jid == f"{account.jid}/desk"

    answer = conn.iq(f"<session xmlns='{SESSION_NS}'/>", type_="set", id_="sess")
    assert answer.get("type") == "result", answer.attrib


def test_bind_without_resource_gets_generated_one(server, raw):
    account = server.new_account("gen")
    conn = raw()
    conn.starttls()
    conn.auth_plain(account.user, account.password)
    conn.send(f"<iq type='set' id='b'><bind xmlns='{BIND_NS}'/></iq>")
    answer = conn.read_element()
    assert answer.get("type") == "result"
    jid = answer.findtext(f"{q(BIND_NS, 'bind')}/{q(BIND_NS, 'jid')}")
    assert jid and jid.startswith(f"{account.jid}/") and len(jid) > len(account.jid) + 1


def test_stanza_after_auth_before_bind_is_not_routed(server, raw):
    # RFC 6120 §7.1: no stanzas may be exchanged before a resource is bound.
    account, other = server.new_account("nobind"), server.new_account("target")
    target = raw()
    target_jid = target.login(other.user, other.password)
    conn = raw()
    conn.starttls()
    conn.auth_plain(account.user, account.password)
    conn.send(f"<message to='{target_jid}' type='chat'><body>sneaky</body></message>")
    try:
        answer = conn.read_element(timeout=2.0)
    except (StreamClosed, TimeoutError):
        answer = None  # closed or silently dropped: both acceptable
    if answer is not None:
        assert answer.tag in (q(STREAM_NS, "error"), q(CLIENT_NS, "message")), answer.tag
        if answer.tag == q(CLIENT_NS, "message"):
            assert answer.get("type") == "error"
    try:
        leaked = target.read_element(timeout=1.0)
    except TimeoutError:
        return
    raise ProtocolError(f"unbound stream's stanza was delivered: {leaked.tag}")
