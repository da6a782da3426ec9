"""XEP-0313 message archive management with slixmpp's plugin: 250 messages paged forwards and
backwards with XEP-0059 without a gap or a duplicate, filters by contact and time, XEP-0359
stanza ids on live messages matching the archive, and preferences."""

from __future__ import annotations

import asyncio
import datetime

from xmppclient import Client


async def archived_bodies(client: Client, **kwargs) -> list[str]:
    bodies = []
    async for result in client.plugin["xep_0313"].iterate(**kwargs):
        bodies.append(result["mam_result"]["forwarded"]["stanza"]["body"])
    return bodies


async def test_paging_through_250_messages(server, clients):
    alice, bob, carol = (server.new_account(n) for n in ("alice", "bob", "carol"))
    a = clients(alice, resource="a", plugins=("xep_0313", "xep_0359"))
    b = clients(bob, resource="b")
    c = clients(carol, resource="c")
    await a.online()
    await b.online()
    await c.online()
    info = await a.plugin["xep_0030"].get_info(jid=alice.jid)
    assert "urn:xmpp:mam:2" in info["disco_info"]["features"]

    sent = []
    for n in range(250):
        body = f"message {n:03d}"
        sent.append(body)
        if n % 2 == 0:
            b.send_message(mto=alice.jid, mbody=body, mtype="chat")
        else:
            a.send_message(mto=bob.jid, mbody=body, mtype="chat")
        if n % 50 == 49:
            await b.sync()
            await a.sync()
    # Every live message alice got carries the stanza id her archive gave it.
    live = [await a.next_message() for _ in range(125)]
    ids = [m["stanza_id"]["id"] for m in live]
    assert all(ids) and len(set(ids)) == 125
    assert all(m["stanza_id"]["by"] == alice.jid for m in live)
    await b.sync()

    def in_order(bodies: list[str]) -> None:
        # Every message once; each sender's in the order sent (the two clients' messages
        # interleave as they reached the server).
        assert sorted(bodies) == sent
        numbers = [int(b.split()[1]) for b in bodies]
        for parity in (0, 1):
            mine = [n for n in numbers if n % 2 == parity]
            assert mine == sorted(mine)

    forwards = await archived_bodies(a, with_jid=bob.jid, rsm={"max": 40})
    in_order(forwards)
    backwards = await archived_bodies(a, with_jid=bob.jid, reverse=True, rsm={"max": 40})
    assert backwards == list(reversed(forwards)), "backwards: the same pages, newest first"

    # Filters: by contact, and by time.
    middle = datetime.datetime.now(datetime.timezone.utc)
    await asyncio.sleep(0.05)
    c.send_message(mto=alice.jid, mbody="from carol", mtype="chat")
    await a.next_message()
    assert await archived_bodies(a, with_jid=carol.jid) == ["from carol"]
    assert await archived_bodies(a, start=middle) == ["from carol"]
    everything = await archived_bodies(a, rsm={"max": 100})
    assert len(everything) == 251

    # The archive ids of the results are the stanza ids alice saw live.
    archived_ids = set()
    async for result in a.plugin["xep_0313"].iterate(with_jid=bob.jid, rsm={"max": 100}):
        archived_ids.add(result["mam_result"]["id"])
    assert set(ids) <= archived_ids


async def test_preferences_stop_archiving(server, clients):
    alice, bob = server.new_account("alice"), server.new_account("bob")
    a = clients(alice, resource="a", plugins=("xep_0313",))
    b = clients(bob, resource="b")
    await a.online()
    await b.online()
    b.send_message(mto=alice.jid, mbody="kept", mtype="chat")
    await a.next_message()
    iq = a.make_iq_set()
    prefs = iq.xml.makeelement("{urn:xmpp:mam:2}prefs", {"default": "never"})
    iq.xml.append(prefs)
    await iq.send(timeout=5)
    b.send_message(mto=alice.jid, mbody="not kept", mtype="chat")
    await a.next_message()
    assert await archived_bodies(a) == ["kept"]
