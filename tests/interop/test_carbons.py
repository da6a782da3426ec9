"""XEP-0280 message carbons with slixmpp's plugin: each resource that enabled carbons sees
the messages its account's other resources received and sent; `<private/>` and XEP-0334
`<no-copy/>` messages are not copied, nor are copies sent to resources without carbons."""

from __future__ import annotations

import asyncio

import pytest

from xmppclient import Client


def carbon_queues(client: Client) -> tuple[asyncio.Queue, asyncio.Queue]:
    received: asyncio.Queue = asyncio.Queue()
    sent: asyncio.Queue = asyncio.Queue()
    client.add_event_handler("carbon_received", received.put_nowait)
    client.add_event_handler("carbon_sent", sent.put_nowait)
    return received, sent


async def nothing_in(queue: asyncio.Queue, within: float = 0.7) -> None:
    with pytest.raises(asyncio.TimeoutError):
        got = await asyncio.wait_for(queue.get(), within)
        raise AssertionError(f"unexpected carbon: {got}")


async def test_carbons_between_two_resources(server, clients):
    alice, bob = server.new_account("alice"), server.new_account("bob")
    phone = clients(alice, resource="phone", plugins=("xep_0280",))
    laptop = clients(alice, resource="laptop", plugins=("xep_0280",))
    old = clients(alice, resource="old")  # no carbons
    b = clients(bob, resource="b")
    for c in (phone, laptop, old, b):
        await c.online()
    feats = await phone.plugin["xep_0030"].get_info(jid="localhost")
    assert "urn:xmpp:carbons:2" in feats["disco_info"]["features"]
    await phone.plugin["xep_0280"].enable()
    await laptop.plugin["xep_0280"].enable()
    received, sent = carbon_queues(laptop)

    # bob writes to alice's phone: the laptop sees it as received.
    b.send_message(mto=f"{alice.jid}/phone", mbody="to the phone", mtype="chat")
    assert (await phone.next_message())["body"] == "to the phone"
    carbon = await asyncio.wait_for(received.get(), 5)
    inner = carbon["carbon_received"]
    assert inner["body"] == "to the phone"
    assert str(inner["from"]) == f"{bob.jid}/b"
    assert str(carbon["from"]) == alice.jid

    # The phone writes to bob: the laptop sees it as sent.
    phone.send_message(mto=bob.jid, mbody="from the phone", mtype="chat")
    assert (await b.next_message())["body"] == "from the phone"
    carbon = await asyncio.wait_for(sent.get(), 5)
    assert carbon["carbon_sent"]["body"] == "from the phone"
    assert str(carbon["carbon_sent"]["to"]) == bob.jid

    # Private and no-copy messages are not copied; the resource without carbons got nothing.
    private = phone.make_message(mto=bob.jid, mbody="just here", mtype="chat")
    private.xml.append(private.xml.makeelement("{urn:xmpp:carbons:2}private", {}))
    private.send()
    nocopy = b.make_message(mto=f"{alice.jid}/phone", mbody="no copies", mtype="chat")
    nocopy.xml.append(nocopy.xml.makeelement("{urn:xmpp:hints}no-copy", {}))
    nocopy.send()
    assert (await b.next_message())["body"] == "just here"
    assert (await phone.next_message())["body"] == "no copies"
    await nothing_in(received)
    await nothing_in(sent)
    await old.no_message(within=0.3)

    # Disabled: no more copies.
    await laptop.plugin["xep_0280"].disable()
    b.send_message(mto=f"{alice.jid}/phone", mbody="again", mtype="chat")
    assert (await phone.next_message())["body"] == "again"
    await nothing_in(received)
