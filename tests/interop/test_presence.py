"""Presence subscriptions (RFC 6121 §3) and presence broadcast (§4)
between real slixmpp clients."""

from __future__ import annotations

import asyncio

import pytest

from xmppclient import WAIT, Client


async def wait_push(client: Client, jid: str, **expected) -> dict:
    """Read roster pushes until one for `jid` has all `expected` values."""
    seen = []

    async def scan():
        while True:
            iq = await client.roster_pushes.get()
            for item_jid, item in iq["roster"]["items"].items():
                item = dict(item)
                seen.append((str(item_jid), item))
                if str(item_jid) == jid and all(
                        item.get(k) == v for k, v in expected.items()):
                    return item
    try:
        return await asyncio.wait_for(scan(), WAIT)
    except asyncio.TimeoutError:
        raise AssertionError(
            f"no roster push for {jid} with {expected}; saw {seen}") from None


def from_is(jid: str, ptype: str):
    def pred(pres) -> bool:
        return str(pres["from"]) == jid and pres["type"] == ptype
    return pred


def bare_from_is(jid: str, ptype: str):
    def pred(pres) -> bool:
        return pres["from"].bare == jid and pres["type"] == ptype
    return pred


async def subscription_of(client: Client, jid: str) -> tuple[str, str]:
    items = await client.roster_items()
    assert jid in items, f"{jid} missing from roster {items}"
    return items[jid]["subscription"], items[jid].get("ask") or ""


async def subscribe(user: Client, contact: Client) -> None:
    """`user` subscribes to `contact`'s presence; `contact` approves."""
    ubare, cbare = user.boundjid.bare, contact.boundjid.bare
    user.send_presence(pto=cbare, ptype="subscribe")
    req = await contact.wait_presence(bare_from_is(ubare, "subscribe"))
    assert str(req["from"]) == ubare, "subscription request must come from the bare JID"
    contact.send_presence(pto=ubare, ptype="subscribed")
    await user.wait_presence(bare_from_is(cbare, "subscribed"))


async def test_full_subscription_handshake(server, clients):
    alice, bob = server.new_account("alice"), server.new_account("bob")
    a = clients(alice, resource="a")
    b = clients(bob, resource="b")
    await a.online()
    await b.online()

    # alice -> subscribe -> bob
    a.send_presence(pto=bob.jid, ptype="subscribe")
    item = await wait_push(a, bob.jid, ask="subscribe")
    assert item["subscription"] == "none"
    req = await b.wait_presence(bare_from_is(alice.jid, "subscribe"))
    assert str(req["from"]) == alice.jid
    assert await subscription_of(a, bob.jid) == ("none", "subscribe")

    # bob approves: bob has 'from', alice has 'to'
    b.send_presence(pto=alice.jid, ptype="subscribed")
    item = await wait_push(b, alice.jid, subscription="from")
    item = await wait_push(a, bob.jid, subscription="to")
    assert not item.get("ask")
    answer = await a.wait_presence(bare_from_is(bob.jid, "subscribed"))
    assert answer["to"].bare == alice.jid
    # alice now sees bob's current presence
    await a.wait_presence(from_is(f"{bob.jid}/b", "available"))
    assert await subscription_of(a, bob.jid) == ("to", "")
    assert await subscription_of(b, alice.jid) == ("from", "")

    # bob -> subscribe -> alice; alice approves: both sides 'both'
    b.send_presence(pto=alice.jid, ptype="subscribe")
    await wait_push(b, alice.jid, subscription="from", ask="subscribe")
    await a.wait_presence(bare_from_is(bob.jid, "subscribe"))
    a.send_presence(pto=bob.jid, ptype="subscribed")
    await wait_push(a, bob.jid, subscription="both")
    await wait_push(b, alice.jid, subscription="both")
    await b.wait_presence(from_is(f"{alice.jid}/a", "available"))
    assert await subscription_of(a, bob.jid) == ("both", "")
    assert await subscription_of(b, alice.jid) == ("both", "")

    # alice unsubscribes from bob: alice 'from', bob 'to'; alice stops
    # seeing bob (gets his unavailable presence)
    a.send_presence(pto=bob.jid, ptype="unsubscribe")
    await wait_push(a, bob.jid, subscription="from")
    await wait_push(b, alice.jid, subscription="to")
    await b.wait_presence(bare_from_is(alice.jid, "unsubscribe"))
    await a.wait_presence(from_is(f"{bob.jid}/b", "unavailable"))
    assert await subscription_of(a, bob.jid) == ("from", "")
    assert await subscription_of(b, alice.jid) == ("to", "")

    # alice cancels bob's subscription to her: both 'none'; bob gets
    # 'unsubscribed' and alice's unavailable presence
    a.send_presence(pto=bob.jid, ptype="unsubscribed")
    await wait_push(a, bob.jid, subscription="none")
    await wait_push(b, alice.jid, subscription="none")
    await b.wait_presence(bare_from_is(alice.jid, "unsubscribed"))
    await b.wait_presence(from_is(f"{alice.jid}/a", "unavailable"))
    assert (await subscription_of(a, bob.jid))[0] == "none"
    assert (await subscription_of(b, alice.jid))[0] == "none"


@pytest.mark.parametrize("how", ["stream-close", "tcp-drop"])
async def test_presence_broadcast_to_subscribers_and_unavailable_on_disconnect(server, clients, how):
    alice, bob, carol = (server.new_account(n) for n in ("alice", "bob", "carol"))
    a = clients(alice, resource="a")
    b = clients(bob, resource="b")
    c = clients(carol, resource="c")
    await a.online()
    await b.online()
    await c.online()
    await subscribe(b, a)  # bob watches alice
    await b.wait_presence(from_is(f"{alice.jid}/a", "available"))

    a.send_presence(pshow="dnd", pstatus="in a meeting")
    pres = await b.wait_presence(
        lambda p: str(p["from"]) == f"{alice.jid}/a" and p["show"] == "dnd")
    assert pres["status"] == "in a meeting"
    assert pres["to"].bare == bob.jid

    # alice does not watch bob, so bob's changes do not reach her.
    b.send_presence(pshow="away")
    # carol has no subscription: she sees nothing of alice.
    a.send_presence(pshow="chat")
    await b.wait_presence(
        lambda p: str(p["from"]) == f"{alice.jid}/a" and p["show"] == "chat")

    if how == "stream-close":
        await a.close()
    else:
        # No </stream:stream>, no unavailable presence: just the TCP close.
        a.abort()
    gone = await b.wait_presence(from_is(f"{alice.jid}/a", "unavailable"))
    assert gone["to"].bare == bob.jid

    leaked_to_carol = [p for p in drain(c.presences)
                       if p["from"].bare == alice.jid]
    assert leaked_to_carol == [], leaked_to_carol
    leaked_to_alice = [p for p in drain(a.presences)
                       if p["from"].bare == bob.jid and p["show"] == "away"]
    assert leaked_to_alice == [], leaked_to_alice


def drain(queue: asyncio.Queue) -> list:
    out = []
    while not queue.empty():
        out.append(queue.get_nowait())
    return out


async def test_initial_presence_probes_contacts(server, clients):
    alice, bob = server.new_account("alice"), server.new_account("bob")
    a = clients(alice, resource="a")
    b = clients(bob, resource="b")
    await a.online()
    await b.online()
    await subscribe(b, a)
    await subscribe(a, b)
    await b.close()

    # bob comes back: his initial presence makes the server send him
    # alice's current presence, and tell alice he is back.
    b2 = clients(bob, resource="b2")
    await b2.online()
    await b2.wait_presence(from_is(f"{alice.jid}/a", "available"))
    await a.wait_presence(from_is(f"{bob.jid}/b2", "available"))


async def test_presence_to_all_own_resources(server, clients):
    # RFC 6121 §4.2.2: initial presence is also sent to the user's own
    # other available resources.
    alice = server.new_account("alice")
    r1 = clients(alice, resource="one")
    r2 = clients(alice, resource="two")
    await r1.online()
    await r2.online()
    await r1.wait_presence(from_is(f"{alice.jid}/two", "available"))
    await r2.close()
    await r1.wait_presence(from_is(f"{alice.jid}/two", "unavailable"))
