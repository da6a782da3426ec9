"""XEP-0191 blocking command and XEP-0016 privacy lists with slixmpp's plugins: a blocked
contact's messages are refused with <service-unavailable/>, messages to it with
<not-acceptable/><blocked/>, it stops seeing the user's presence; the other resource gets the
block pushed; unblocking restores everything. A default privacy list denies a contact's
messages until it is removed as the default."""

from __future__ import annotations

import asyncio

import pytest
from slixmpp.exceptions import IqError

from xmppclient import Client


async def refused(client: Client) -> str:
    """The condition of the next message error (slixmpp also queues it as a message)."""
    error = await client.next_message_error()
    assert (await client.next_message())["type"] == "error"
    return error


async def subscribe_both(a: Client, b: Client) -> None:
    for watcher, target in ((a, b), (b, a)):
        watcher.send_presence(pto=target.boundjid.bare, ptype="subscribe")
        await target.wait_presence(lambda p: p["type"] == "subscribe")
        target.send_presence(pto=watcher.boundjid.bare, ptype="subscribed")
        await watcher.wait_presence(lambda p: p["type"] == "subscribed")


async def test_block_and_unblock(server, clients):
    alice, bob = server.new_account("alice"), server.new_account("bob")
    a = clients(alice, resource="a", plugins=("xep_0191",))
    a2 = clients(alice, resource="a2", plugins=("xep_0191",))
    b = clients(bob, resource="b")
    for c in (a, a2, b):
        await c.online()
    await subscribe_both(a, b)
    assert await a2.plugin["xep_0191"].get_blocked_jids() == set()
    pushes: asyncio.Queue = asyncio.Queue()
    a2.add_event_handler("blocked", pushes.put_nowait)

    await a.plugin["xep_0191"].block(bob.jid)
    assert {str(j) for j in await a.plugin["xep_0191"].get_blocked_jids()} == {bob.jid}
    push = await asyncio.wait_for(pushes.get(), 5)
    assert {str(i["jid"]) for i in push["block"]["items"]} == {bob.jid}
    # bob no longer sees alice as available.
    await b.wait_presence(lambda p: p["type"] == "unavailable" and p["from"].bare == alice.jid)

    # bob's message is refused; alice gets nothing.
    b.send_message(mto=alice.jid, mbody="hello?", mtype="chat")
    error = await refused(b)
    assert error["error"]["condition"] == "service-unavailable"
    await a.no_message(within=0.5)
    # alice's message to bob is refused with <blocked/>.
    a.send_message(mto=bob.jid, mbody="psst", mtype="chat")
    error = await refused(a)
    assert error["error"]["condition"] == "not-acceptable"
    assert error.xml.find(".//{urn:xmpp:blocking:errors}blocked") is not None
    await b.no_message(within=0.5)

    await a.plugin["xep_0191"].unblock(bob.jid)
    assert await a.plugin["xep_0191"].get_blocked_jids() == set()
    b.send_message(mto=alice.jid, mbody="better now", mtype="chat")
    got = await a.next_message()
    assert got["body"] == "better now"


async def test_a_default_privacy_list(server, clients):
    alice, carol = server.new_account("alice"), server.new_account("carol")
    a = clients(alice, resource="a", plugins=("xep_0016",))
    c = clients(carol, resource="c")
    await a.online()
    await c.online()
    await a.plugin["xep_0016"].edit_list("quiet", timeout=5, rules=[
        {"type": "jid", "value": carol.jid, "action": "deny", "order": "1",
         "message": True},
        {"value": "", "action": "allow", "order": "2"},
    ])
    lists = await a.plugin["xep_0016"].get_privacy_lists(timeout=5)
    assert [l["name"] for l in lists["privacy"]["lists"]] == ["quiet"]
    await a.plugin["xep_0016"].make_default("quiet", timeout=5)

    c.send_message(mto=alice.jid, mbody="hi", mtype="chat")
    error = await refused(c)
    assert error["error"]["condition"] == "service-unavailable"
    # The deny covers messages only: an IQ goes through (answered by the server for alice).
    iq = c.make_iq_get(ito=alice.jid)
    iq.enable("disco_info")
    await iq.send(timeout=5)

    # A list that is the default cannot be removed.
    with pytest.raises(IqError) as err:
        await a.plugin["xep_0016"].remove_list("quiet")
    assert err.value.condition == "conflict"
    await a.plugin["xep_0016"].remove_default()
    c.send_message(mto=alice.jid, mbody="hi again", mtype="chat")
    assert (await a.next_message())["body"] == "hi again"
    await a.plugin["xep_0016"].remove_list("quiet")
    assert list((await a.plugin["xep_0016"].get_privacy_lists())["privacy"]["lists"]) == []


async def test_an_active_list_filters_inbound_stanzas_for_its_session_only(server, clients):
    alice, dora = server.new_account("alice"), server.new_account("dora")
    quiet = clients(alice, resource="quiet", plugins=("xep_0016",))
    loud = clients(alice, resource="loud")
    d = clients(dora, resource="d")
    await quiet.online()
    await loud.online()
    await d.online()
    await quiet.plugin["xep_0016"].edit_list("no-dora", timeout=5, rules=[
        {"type": "jid", "value": dora.jid, "action": "deny", "order": "1",
         "message": True},
        {"value": "", "action": "allow", "order": "2"},
    ])
    await quiet.plugin["xep_0016"].activate("no-dora", timeout=5)

    # To the bare JID: only the session without the list gets it.
    d.send_message(mto=alice.jid, mbody="to both", mtype="chat")
    assert (await loud.next_message())["body"] == "to both"
    await quiet.no_message(within=0.5)
    # To the session that refuses: an error back.
    d.send_message(mto=f"{alice.jid}/quiet", mbody="to the quiet one", mtype="chat")
    error = await refused(d)
    assert error["error"]["condition"] == "service-unavailable"
    await quiet.no_message(within=0.3)

    # Declining the active list lets everything in again.
    await quiet.plugin["xep_0016"].deactivate(timeout=5)
    d.send_message(mto=f"{alice.jid}/quiet", mbody="welcome back", mtype="chat")
    assert (await quiet.next_message())["body"] == "welcome back"
