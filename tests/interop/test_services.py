"""Server-side services through slixmpp: unknown IQs, service discovery
(XEP-0030), ping (XEP-0199), software version (XEP-0092) and in-band
registration (XEP-0077)."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

import pytest
from slixmpp.exceptions import IqError

from rawxmpp import (CLIENT_NS, SASL_NS, STANZAS_ERR_NS, STREAM_NS, STREAMS_ERR_NS,
                     RawClient, StreamClosed, error_condition, q)
from xmppclient import ClientFactory, LoginFailed

SERVICE_PLUGINS = ("xep_0030", "xep_0199", "xep_0092")
DISCO_INFO = "http://jabber.org/protocol/disco#info"
DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
REGISTER_NS = "jabber:iq:register"
REGISTER_FEATURE_NS = "http://jabber.org/features/iq-register"


async def iq_error(coro) -> tuple[str, str]:
    """Await an IQ that must fail; return (error type, condition)."""
    try:
        result = await coro
    except IqError as err:
        return err.iq["error"]["type"], err.iq["error"]["condition"]
    raise AssertionError(f"expected an IQ error, got {result}")


def unknown_iq(client, to: str, ns: str = "urn:example:tern:unknown"):
    iq = client.Iq()
    iq["type"] = "get"
    iq["to"] = to
    iq.append(ET.Element(f"{{{ns}}}query"))
    return iq.send(timeout=5)


async def test_unknown_namespace_iq_to_server_gets_error(server, clients):
    client = clients(server.new_account("iq"), plugins=SERVICE_PLUGINS)
    await client.login()
    etype, cond = await iq_error(unknown_iq(client, "localhost"))
    assert cond in ("service-unavailable", "feature-not-implemented"), cond
    assert etype == "cancel"
    # A set of an unknown namespace as well.
    iq = client.Iq()
    iq["type"] = "set"
    iq["to"] = "example.test"
    iq.append(ET.Element("{urn:example:tern:other}thing"))
    etype, cond = await iq_error(iq.send(timeout=5))
    assert cond in ("service-unavailable", "feature-not-implemented"), cond


async def test_unknown_namespace_iq_to_account_gets_service_unavailable(server, clients):
    # RFC 6121 §8.5.2.1.3 / RFC 6120 §8.2.3: an IQ to a bare JID is handled
    # by the server on the account's behalf; unknown payload ->
    # service-unavailable (and never forwarded to a resource).
    alice, bob = server.new_account("alice"), server.new_account("bob")
    a = clients(alice, resource="a", plugins=SERVICE_PLUGINS)
    b = clients(bob, resource="b", plugins=SERVICE_PLUGINS)
    await a.online()
    await b.online()
    etype, cond = await iq_error(unknown_iq(a, bob.jid))
    assert cond == "service-unavailable", cond
    # IQ to a full JID that has no session: service-unavailable too.
    etype, cond = await iq_error(unknown_iq(a, f"{bob.jid}/nowhere"))
    assert cond == "service-unavailable", cond


async def test_iq_to_full_jid_is_routed_to_that_resource(server, clients):
    alice, bob = server.new_account("alice"), server.new_account("bob")
    a = clients(alice, resource="a", plugins=SERVICE_PLUGINS)
    b = clients(bob, resource="b", plugins=SERVICE_PLUGINS)
    await a.online()
    await b.online()
    # slixmpp answers XEP-0092 itself, so the reply proves routing both ways.
    reply = await a.plugin["xep_0092"].get_version(f"{bob.jid}/b", timeout=5)
    assert reply["type"] == "result"
    assert reply["from"].full == f"{bob.jid}/b"
    assert reply["software_version"]["name"]


async def test_server_disco_info(server, clients):
    client = clients(server.new_account("disco"), plugins=SERVICE_PLUGINS)
    await client.login()
    iq = await client.plugin["xep_0030"].get_info("localhost", cached=False,
                                                  timeout=5)
    assert iq["type"] == "result"
    assert iq["from"].full == "localhost"
    info = iq["disco_info"]
    identities = {(cat, typ) for cat, typ, _lang, _name in info["identities"]}
    assert ("server", "im") in identities, identities
    features = set(info["features"])
    for feature in (DISCO_INFO, DISCO_ITEMS, "urn:xmpp:ping", "jabber:iq:version"):
        assert feature in features, (feature, features)
    # XEP-0077 is disabled in this server's config, so not advertised.
    assert "jabber:iq:register" not in features


async def test_server_disco_items(server, clients):
    client = clients(server.new_account("disco"), plugins=SERVICE_PLUGINS)
    await client.login()
    iq = await client.plugin["xep_0030"].get_items("example.test", timeout=5)
    assert iq["type"] == "result"
    assert iq["from"].full == "example.test"
    for jid, _node, _name in iq["disco_items"]["items"]:
        assert jid, "disco item without a JID"


async def test_account_disco_info(server, clients):
    account = server.new_account("disco")
    client = clients(account, plugins=SERVICE_PLUGINS)
    await client.login()
    iq = await client.plugin["xep_0030"].get_info(account.jid, cached=False,
                                                  timeout=5)
    assert iq["type"] == "result"
    # RFC 6120 §8.1.2.1: on the account's behalf, 'from' is absent or the
    # bare JID.
    assert iq["from"].full in ("", account.jid), iq["from"]
    info = iq["disco_info"]
    identities = {(cat, typ) for cat, typ, _lang, _name in info["identities"]}
    assert ("account", "registered") in identities, identities
    assert DISCO_INFO in set(info["features"])


async def test_ping_server(server, clients):
    client = clients(server.new_account("ping"), plugins=SERVICE_PLUGINS)
    await client.login()
    for domain in ("localhost", "example.test"):
        iq = await client.plugin["xep_0199"].send_ping(domain, timeout=5)
        assert iq["type"] == "result"
        assert iq["from"].full == domain
        # XEP-0199: the result is empty.
        assert len(iq.xml) == 0, ET.tostring(iq.xml)


async def test_server_software_version(server, clients):
    client = clients(server.new_account("ver"), plugins=SERVICE_PLUGINS)
    await client.login()
    iq = await client.plugin["xep_0092"].get_version("localhost", timeout=5)
    assert iq["type"] == "result"
    version = iq["software_version"]
    assert version["name"].strip(), "empty software name"
    assert version["version"].strip(), "empty software version"
    # [modules.version] show_os defaults to false.
    assert iq.xml.find("{jabber:iq:version}query/{jabber:iq:version}os") is None


def raw_client(server) -> RawClient:
    return RawClient("127.0.0.1", server.starttls_port,
                     ssl_context=server.client_ssl_context())


def pre_auth_register(conn: RawClient, payload: str, type_: str, id_: str):
    """Send a pre-auth XEP-0077 IQ; return (stanza error condition or None,
    stream error condition or None)."""
    conn.send(f"<iq type='{type_}' id='{id_}'><query xmlns='{REGISTER_NS}'>"
              f"{payload}</query></iq>")
    try:
        answer = conn.read_element()
    except StreamClosed:
        return None, "closed"
    if answer.tag == q(STREAM_NS, "error"):
        return None, error_condition(answer, STREAMS_ERR_NS)
    assert answer.tag == q(CLIENT_NS, "iq") and answer.get("id") == id_, (
        ET.tostring(answer))
    if answer.get("type") != "error":
        return answer.get("type"), None
    error = answer.find(q(CLIENT_NS, "error"))
    assert error is not None, ET.tostring(answer)
    return error_condition(error, STANZAS_ERR_NS), None


def test_in_band_registration_refused_when_disabled(server):
    conn = raw_client(server)
    try:
        features = conn.starttls()
        assert features.find(q(REGISTER_FEATURE_NS, "register")) is None, (
            "register feature advertised while [modules.register] is off")
        refused = ("service-unavailable", "not-allowed")
        cond, stream_err = pre_auth_register(conn, "", "get", "g1")
        assert cond in refused or stream_err == "not-authorized", (cond, stream_err)
        if stream_err is None:
            cond, stream_err = pre_auth_register(
                conn, "<username>sneaky</username><password>Sneaky-pw1</password>",
                "set", "s1")
            assert cond in refused or stream_err == "not-authorized", (cond, stream_err)
    finally:
        conn.close()
    # No account was created.
    check = raw_client(server)
    try:
        check.starttls()
        check.send_plain_auth("sneaky", "Sneaky-pw1")
        answer = check.read_element(timeout=10)
        assert answer.tag == q(SASL_NS, "failure"), ET.tostring(answer)
    finally:
        check.close()


def test_register_feature_advertised_when_enabled(register_server):
    conn = raw_client(register_server)
    try:
        features = conn.starttls()
        assert features.find(q(REGISTER_FEATURE_NS, "register")) is not None
    finally:
        conn.close()


@pytest.fixture
async def ibr_clients(register_server):
    factory = ClientFactory(register_server)
    yield factory
    await factory.close_all()


def register_on_connect(client, username: str, password: str) -> asyncio.Future:
    """Make `client` register `username` in-band before it authenticates.

    Returns a future resolved with the registration form it was offered;
    the outcome of the registration itself is left in
    `client.registration_error` (None on success)."""
    outcome = client.loop.create_future()

    async def on_register(form):
        if not outcome.done():
            outcome.set_result(form)
        iq = client.Iq()
        iq["type"] = "set"
        iq["register"]["username"] = username
        iq["register"]["password"] = password
        try:
            await iq.send(timeout=5)
        except IqError as err:
            client.registration_error = err
        else:
            client.registration_error = None

    client.registration_error = "not attempted"
    client.add_event_handler("register", on_register)
    return outcome


async def test_in_band_registration_creates_account(register_server, ibr_clients):
    client = ibr_clients("newbie@localhost", "fresh-Passw0rd", resource="r",
                         plugins=("xep_0077",), mech="SCRAM-SHA-256")
    offered = register_on_connect(client, "newbie", "fresh-Passw0rd")
    await client.login()
    form = await asyncio.wait_for(offered, 1)
    assert {"username", "password"} <= form["register"]["fields"]
    assert client.registration_error is None, client.registration_error
    assert client.boundjid.full == "newbie@localhost/r"
    assert client.sent_mechanisms == ["SCRAM-SHA-256"]

    # The same username cannot be taken again.
    again = ibr_clients("newbie@localhost", "other-Passw0rd",
                        plugins=("xep_0077",), mech="PLAIN")
    register_on_connect(again, "newbie", "other-Passw0rd")
    with pytest.raises(LoginFailed):
        await again.login(timeout=10)
    err = again.registration_error
    assert isinstance(err, IqError), err
    assert err.iq["error"]["condition"] == "conflict"

    # The original password still works from a brand-new connection.
    third = ibr_clients("newbie@localhost", "fresh-Passw0rd", mech="PLAIN")
    await third.login()


async def test_in_band_and_ctl_accounts_talk_to_each_other(register_server, ibr_clients):
    # Accounts from XEP-0077 and from `tern ctl` live in the same store.
    old = register_server.new_account("ctl")
    client = ibr_clients("ibr2@localhost", "Ibr2-password",
                         plugins=("xep_0077",))
    register_on_connect(client, "ibr2", "Ibr2-password")
    await client.online()
    assert client.registration_error is None, client.registration_error
    ctl_client = ibr_clients(old, resource="c")
    await ctl_client.online()
    ctl_client.send_message(mto="ibr2@localhost", mbody="hi from ctl",
                            mtype="chat")
    msg = await client.next_message()
    assert msg["body"] == "hi from ctl"
    assert msg["from"].full == f"{old.jid}/c"
