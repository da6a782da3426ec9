"""XEP-0352 client state indication with slixmpp's plugin: while a client is inactive, presence
and chat states wait (only the latest presence of each contact); a message with a body brings
everything, in order; becoming active brings the rest."""

from __future__ import annotations

import asyncio

from xmppclient import Client


async def subscribe(watcher: Client, target: Client) -> None:
    watcher.send_presence(pto=target.boundjid.bare, ptype="subscribe")
    await target.wait_presence(lambda p: p["type"] == "subscribe")
    target.send_presence(pto=watcher.boundjid.bare, ptype="subscribed")
    await watcher.wait_presence(lambda p: p["type"] == "subscribed")


async def test_inactive_client_gets_presence_later(server, clients):
    alice, bob = server.new_account("alice"), server.new_account("bob")
    a = clients(alice, resource="phone", plugins=("xep_0352", "xep_0085"))
    b = clients(bob, resource="b")
    states: asyncio.Queue = asyncio.Queue()
    a.add_event_handler("chatstate_composing", states.put_nowait)
    await a.online()
    await b.online()
    assert a.plugin["xep_0352"].enabled, "the server offers CSI"
    await subscribe(a, b)
    await a.wait_presence(lambda p: p["from"].bare == bob.jid and p["type"] == "available")

    a.plugin["xep_0352"].send_inactive()
    await a.sync()
    b.send_presence(pshow="away")
    b.send_presence(pshow="xa", pstatus="really gone")
    chat_state = b.make_message(mto=f"{alice.jid}/phone", mtype="chat")
    chat_state["chat_state"] = "composing"
    chat_state.send()
    await b.sync()
    # Nothing arrives while inactive.
    await asyncio.sleep(0.5)
    assert a.presences.empty(), "presence held"
    assert a.messages.empty() and states.empty(), "chat state held"

    # A real message brings the held stanzas first, only bob's latest presence among them.
    b.send_message(mto=f"{alice.jid}/phone", mbody="wake up", mtype="chat")
    composing = await asyncio.wait_for(states.get(), 5)
    assert composing["from"].bare == bob.jid
    got = await a.next_message()
    while not got["body"]:  # the chat state itself, if the client also queued it
        got = await a.next_message()
    assert got["body"] == "wake up"
    pres = await a.wait_presence(lambda p: p["from"].bare == bob.jid)
    assert pres["show"] == "xa" and pres["status"] == "really gone"
    assert a.presences.empty(), "the earlier presence was replaced"

    # Active again: what was held comes at once.
    b.send_presence(pshow="dnd")
    await b.sync()
    await asyncio.sleep(0.3)
    assert a.presences.empty()
    a.plugin["xep_0352"].send_active()
    pres = await a.wait_presence(lambda p: p["from"].bare == bob.jid)
    assert pres["show"] == "dnd"
