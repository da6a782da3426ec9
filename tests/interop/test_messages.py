"""One-to-one messages (RFC 6121 §8.5) between slixmpp clients."""

from __future__ import annotations

import asyncio

from xmppclient import Client


def send_chat(sender: Client, to: str, body: str, **kw) -> None:
    sender.make_message(mto=to, mbody=body, mtype="chat", **kw).send()


async def test_message_to_bare_jid_single_resource(server, clients):
    alice, bob = server.new_account("alice"), server.new_account("bob")
    a = clients(alice, resource="a")
    b = clients(bob, resource="phone")
    await a.online()
    await b.online()
    send_chat(a, bob.jid, "hello bob")
    msg = await b.next_message()
    assert msg["body"] == "hello bob"
    assert msg["type"] == "chat"
    assert msg["from"].full == f"{alice.jid}/a"
    assert msg["to"].bare == bob.jid


async def test_message_to_full_jid_reaches_only_that_resource(server, clients):
    alice, bob = server.new_account("alice"), server.new_account("bob")
    a = clients(alice, resource="a")
    b1 = clients(bob, resource="one")
    b2 = clients(bob, resource="two")
    await a.online()
    await b1.online()
    await b2.online()
    send_chat(a, f"{bob.jid}/two", "for two")
    msg = await b2.next_message()
    assert msg["body"] == "for two"
    assert msg["to"].full == f"{bob.jid}/two"
    assert msg["from"].full == f"{alice.jid}/a"
    await b1.no_message(within=1.0)

    send_chat(a, f"{bob.jid}/one", "for one")
    msg = await b1.next_message()
    assert msg["body"] == "for one"
    await b2.no_message(within=0.5)


async def test_message_to_bare_jid_with_two_equal_priority_resources(server, clients):
    # RFC 6121 §8.5.2.1.1: deliver to the most available resource(s) or to
    # all non-negative ones; at least one must get it, none twice.
    alice, bob = server.new_account("alice"), server.new_account("bob")
    a = clients(alice, resource="a")
    b1 = clients(bob, resource="one")
    b2 = clients(bob, resource="two")
    await a.online()
    await b1.online(priority=0)
    await b2.online(priority=0)
    send_chat(a, bob.jid, "to whoever")
    await asyncio.sleep(1.0)
    got = []
    for res in (b1, b2):
        while not res.messages.empty():
            got.append((res.boundjid.resource, res.messages.get_nowait()["body"]))
    assert got, "the message reached no resource"
    assert all(body == "to whoever" for _, body in got)
    assert len({r for r, _ in got}) == len(got), f"duplicate delivery: {got}"


async def test_message_to_bare_jid_skips_negative_priority(server, clients):
    # RFC 6121 §8.5.2.1.1: never deliver to a resource with negative priority.
    alice, bob = server.new_account("alice"), server.new_account("bob")
    a = clients(alice, resource="a")
    pos = clients(bob, resource="pos")
    neg = clients(bob, resource="neg")
    await a.online()
    await pos.online(priority=1)
    await neg.online(priority=-1)
    send_chat(a, bob.jid, "not for negative")
    msg = await pos.next_message()
    assert msg["body"] == "not for negative"
    await neg.no_message(within=1.0)


async def test_message_to_unknown_account_returns_service_unavailable(server, clients):
    alice = server.new_account("alice")
    a = clients(alice, resource="a")
    await a.online()
    for target in ("ghost@localhost", "ghost@example.test"):
        send_chat(a, target, "anyone there?")
        err = await a.next_message_error()
        assert err["type"] == "error"
        assert err["from"].bare == target
        assert err["error"]["condition"] == "service-unavailable", err
        assert err["error"]["type"] == "cancel"


async def test_spoofed_from_is_replaced_with_real_full_jid(server, clients):
    alice, bob = server.new_account("alice"), server.new_account("bob")
    a = clients(alice, resource="real")
    b = clients(bob, resource="b")
    await a.online()
    await b.online()
    send_chat(a, bob.jid, "who am I?", mfrom="mallory@localhost/evil")
    msg = await b.next_message()
    assert msg["body"] == "who am I?"
    assert msg["from"].full == f"{alice.jid}/real", msg["from"]

    # Spoofing another resource of one's own account is not allowed either.
    send_chat(a, bob.jid, "still me", mfrom=f"{alice.jid}/other")
    msg = await b.next_message()
    assert msg["body"] == "still me"
    assert msg["from"].full == f"{alice.jid}/real", msg["from"]


async def test_message_between_served_domains(server, clients):
    alice = server.new_account("alice")
    erin = server.new_account("erin", domain="example.test")
    a = clients(alice, resource="a")
    e = clients(erin, resource="e")
    await a.online()
    await e.online()
    send_chat(a, erin.jid, "cross-domain")
    msg = await e.next_message()
    assert msg["body"] == "cross-domain"
    assert msg["from"].full == f"{alice.jid}/a"
    send_chat(e, alice.jid, "reply")
    msg = await a.next_message()
    assert msg["body"] == "reply"
    assert msg["from"].full == f"{erin.jid}/e"
