"""Authentication with slixmpp: accounts made by `tern ctl`, each SASL
mechanism forced in turn, direct TLS (XEP-0368), wrong credentials, and
resource conflicts."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from xmppclient import LoginFailed

# Python's ssl module (and so slixmpp) only implements the tls-unique
# channel binding, which does not exist on TLS 1.3; tern offers the -PLUS
# mechanisms with tls-exporter (RFC 9266), so slixmpp can only use them when
# its Python exposes tls-exporter.
HAS_TLS_EXPORTER = "tls-exporter" in ssl.CHANNEL_BINDING_TYPES

MECHANISMS = [
    "PLAIN",
    "SCRAM-SHA-1",
    "SCRAM-SHA-256",
    pytest.param("SCRAM-SHA-1-PLUS", marks=pytest.mark.skipif(
        not HAS_TLS_EXPORTER,
        reason="slixmpp/python ssl cannot compute tls-exporter channel binding")),
    pytest.param("SCRAM-SHA-256-PLUS", marks=pytest.mark.skipif(
        not HAS_TLS_EXPORTER,
        reason="slixmpp/python ssl cannot compute tls-exporter channel binding")),
]


@pytest.mark.parametrize("mech", MECHANISMS)
async def test_login_with_forced_mechanism_uses_that_mechanism(server, clients, mech):
    account = server.new_account("mech")
    client = clients(account, resource="laptop", mech=mech)
    await client.login()
    assert client.sent_mechanisms == [mech], (
        f"slixmpp sent <auth/> with {client.sent_mechanisms}, forced {mech}")
    assert mech in client.plugin["feature_mechanisms"].mech_list
    assert client.authenticated
    assert client.boundjid.full == f"{account.jid}/laptop"


async def test_default_negotiation_succeeds_without_channel_binding(server, clients):
    # The server offers -PLUS first; slixmpp on TLS 1.3 without tls-exporter
    # must fall back to plain SCRAM (gs2 flag "n") and the server accept it.
    account = server.new_account("dflt")
    client = clients(account)
    await client.login()
    offered = client.plugin["feature_mechanisms"].mech_list
    assert {"SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-1-PLUS",
            "SCRAM-SHA-1", "PLAIN"} <= set(offered)
    assert len(client.sent_mechanisms) == 1
    if client.tls_version == "TLSv1.3" and not HAS_TLS_EXPORTER:
        assert client.sent_mechanisms == ["SCRAM-SHA-256"]
    assert client.boundjid.bare == account.jid
    # The server chose a resource for us.
    assert client.boundjid.resource


async def test_login_on_second_domain(server, clients):
    account = server.new_account("dom2", domain="example.test")
    client = clients(account, mech="SCRAM-SHA-256")
    await client.login()
    assert client.boundjid.bare == account.jid


async def test_direct_tls_login_on_second_port(server, clients):
    account = server.new_account("direct")
    client = clients(account, resource="tls", direct_tls=True,
                     mech="SCRAM-SHA-256")
    await client.login()
    assert client.tern_port == server.direct_port
    assert client.tls_version is not None, "session is not over TLS"
    # No STARTTLS happened: the stream was TLS from the first byte.
    assert "starttls" not in client.features
    assert client.boundjid.full == f"{account.jid}/tls"
    assert client.sent_mechanisms == ["SCRAM-SHA-256"]


@pytest.mark.parametrize("mech", ["PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-256"])
async def test_wrong_password_fails_auth(server, clients, mech):
    account = server.new_account("wrong")
    client = clients(account, password="not-the-password", mech=mech)
    with pytest.raises(LoginFailed) as info:
        await client.login(timeout=10)
    assert info.value.reason == "SASL failure: not-authorized", info.value.reason
    assert not client.authenticated


async def test_unknown_user_fails_like_wrong_password(server, clients):
    client = clients("nobody-here@localhost", "whatever", mech="SCRAM-SHA-256")
    with pytest.raises(LoginFailed) as info:
        await client.login(timeout=10)
    assert info.value.reason == "SASL failure: not-authorized", info.value.reason


async def test_password_is_per_domain(server, clients):
    account = server.new_account("perdom")
    # Same username on the other served domain does not exist.
    client = clients(f"{account.user}@example.test", account.password,
                     mech="PLAIN")
    with pytest.raises(LoginFailed) as info:
        await client.login(timeout=10)
    assert info.value.reason == "SASL failure: not-authorized", info.value.reason


async def test_same_full_jid_replaces_first_session_with_conflict(server, clients):
    account = server.new_account("dup")
    first = clients(account, resource="same")
    await first.login()
    second = clients(account, resource="same")
    await second.login()
    assert second.boundjid.full == f"{account.jid}/same"

    reason = await asyncio.wait_for(asyncio.shield(first.gone), 5)
    conditions = [e["condition"] for e in first.stream_errors]
    assert conditions == ["conflict"], (conditions, reason)

    # The new session is fully usable and owns the resource.
    echo = second.make_message(mto=second.boundjid.full, mbody="still here")
    echo.send()
    msg = await second.next_message()
    assert msg["body"] == "still here"
    assert msg["from"].full == f"{account.jid}/same"
