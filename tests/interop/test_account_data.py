"""Per-account data with slixmpp's own plugins: XEP-0049 private XML storage (through
XEP-0048 bookmarks), XEP-0054 vCards and XEP-0153 avatar hashes in presence, XEP-0012 last
activity and XEP-0202 entity time."""

from __future__ import annotations

import datetime
import hashlib
import xml.etree.ElementTree as ET

import pytest
from slixmpp.exceptions import IqError

from ternserver import TernServer
from xmppclient import Client


async def subscribe(watcher: Client, target: Client) -> None:
    """`watcher` subscribes to `target`'s presence, approved."""
    watcher.send_presence(pto=target.boundjid.bare, ptype="subscribe")
    await target.wait_presence(lambda p: p["type"] == "subscribe")
    target.send_presence(pto=watcher.boundjid.bare, ptype="subscribed")
    await watcher.wait_presence(lambda p: p["type"] == "subscribed")


async def test_bookmarks_in_private_storage(server, clients):
    alice = server.new_account("alice")
    a = clients(alice, resource="a", plugins=("xep_0049", "xep_0048"))
    await a.online()
    empty = await a.plugin["xep_0048"].get_bookmarks(method="xep_0049")
    assert list(empty["private"]["bookmarks"]["conferences"]) == []

    bookmarks = a.plugin["xep_0048"].stanza.Bookmarks()
    bookmarks.add_conference("room@muc.localhost", "alice", name="The room", autojoin=True)
    await a.plugin["xep_0048"].set_bookmarks(bookmarks, method="xep_0049")

    # Another resource of the same account reads it back.
    a2 = clients(alice, resource="b", plugins=("xep_0049", "xep_0048"))
    await a2.online()
    got = await a2.plugin["xep_0048"].get_bookmarks(method="xep_0049")
    conferences = list(got["private"]["bookmarks"]["conferences"])
    assert len(conferences) == 1
    assert conferences[0]["jid"] == "room@muc.localhost"
    assert conferences[0]["name"] == "The room"
    assert conferences[0]["autojoin"]


async def test_private_storage_refuses_its_own_namespace(server, clients):
    alice = server.new_account("alice")
    a = clients(alice, resource="a")
    await a.online()
    iq = a.make_iq_get()
    query = ET.Element("{jabber:iq:private}query")
    query.append(ET.Element("{jabber:iq:private}query"))
    iq.xml.append(query)
    with pytest.raises(IqError) as err:
        await iq.send(timeout=5)
    assert err.value.condition == "not-acceptable"


async def test_vcards_and_avatar_hashes(server, clients):
    alice, bob = server.new_account("alice"), server.new_account("bob")
    a = clients(alice, resource="a", plugins=("xep_0054",))
    b = clients(bob, resource="b", plugins=("xep_0054", "xep_0153"))
    await a.online()
    await b.online()
    await subscribe(b, a)

    # No vCard yet: an empty one.
    got = await b.plugin["xep_0054"].get_vcard(alice.jid)
    assert got["vcard_temp"]["FN"] == ""

    photo = b"\x89PNG not really, but bytes all the same"
    vcard = a.plugin["xep_0054"].make_vcard()
    vcard["FN"] = "Alice Liddell"
    vcard["NICKNAME"] = "alice"
    vcard["PHOTO"]["TYPE"] = "image/png"
    vcard["PHOTO"]["BINVAL"] = photo
    await a.plugin["xep_0054"].publish_vcard(vcard)

    got = await b.plugin["xep_0054"].get_vcard(alice.jid)
    assert got["vcard_temp"]["FN"] == "Alice Liddell"
    assert got["vcard_temp"]["PHOTO"]["BINVAL"] == photo

    # Only alice changes her vCard.
    with pytest.raises(IqError) as err:
        iq = b.make_iq_set(ito=alice.jid)
        iq.append(b.plugin["xep_0054"].make_vcard())
        await iq.send(timeout=5)
    assert err.value.condition == "forbidden"

    # Her next presence carries the photo's hash though her client did not add it.
    a.send_presence(pstatus="with a picture")
    pres = await b.wait_presence(lambda p: p["status"] == "with a picture")
    assert pres["vcard_temp_update"]["photo"] == hashlib.sha1(photo).hexdigest()


@pytest.fixture(scope="module")
def small_vcards(tmp_path_factory):
    srv = TernServer(tmp_path_factory.mktemp("vcard-limit"),
                     extra_sections={"modules.vcard": {"max_size": "8KiB"}}).start()
    yield srv
    srv.stop()


async def test_vcard_size_limit(small_vcards):
    alice = small_vcards.new_account("alice")
    a = Client(small_vcards, f"{alice.jid}/a", alice.password, plugins=("xep_0054",))
    try:
        await a.online()
        vcard = a.plugin["xep_0054"].make_vcard()
        vcard["PHOTO"]["BINVAL"] = b"x" * (7 * 1024)  # 9.3 KiB in base64: over 8 KiB
        with pytest.raises(IqError) as err:
            await a.plugin["xep_0054"].publish_vcard(vcard)
        assert err.value.condition == "not-acceptable"
        # A smaller one is kept.
        vcard["PHOTO"]["BINVAL"] = b"x" * 1024
        await a.plugin["xep_0054"].publish_vcard(vcard)
        got = await a.plugin["xep_0054"].get_vcard(alice.jid)
        assert got["vcard_temp"]["PHOTO"]["BINVAL"] == b"x" * 1024
    finally:
        await a.close()


async def test_last_activity_and_entity_time(server, clients):
    alice, bob, eve = (server.new_account(n) for n in ("alice", "bob", "eve"))
    a = clients(alice, resource="a", plugins=("xep_0012", "xep_0202"))
    b = clients(bob, resource="b", plugins=("xep_0012",))
    e = clients(eve, resource="e", plugins=("xep_0012",))
    await a.online()
    await b.online()
    await e.online()
    await subscribe(a, b)  # alice sees bob's presence; eve does not

    # The server's uptime, and its clock.
    uptime = await a.plugin["xep_0012"].get_last_activity("localhost")
    assert uptime["last_activity"]["seconds"] >= 0
    now = await a.plugin["xep_0202"].get_entity_time("localhost")
    # Read as XEP-0202 writes it (`…Z`); slixmpp's own getter appends another `Z`.
    utc = now.xml.find("{urn:xmpp:time}time/{urn:xmpp:time}utc").text
    tzo = now.xml.find("{urn:xmpp:time}time/{urn:xmpp:time}tzo").text
    assert utc.endswith("Z") and tzo == "+00:00"
    stamp = datetime.datetime.fromisoformat(utc.replace("Z", "+00:00"))
    assert abs((stamp - datetime.datetime.now(datetime.timezone.utc)).total_seconds()) < 5

    # bob is online: 0 seconds.
    online = await a.plugin["xep_0012"].get_last_activity(bob.jid)
    assert online["last_activity"]["seconds"] == 0

    b.send_presence(ptype="unavailable", pstatus="gone fishing")
    await a.wait_presence(lambda p: p["type"] == "unavailable")
    seen = await a.plugin["xep_0012"].get_last_activity(bob.jid)
    assert 0 <= seen["last_activity"]["seconds"] <= 5
    assert seen["last_activity"]["status"] == "gone fishing"

    # eve has no subscription to bob's presence: forbidden.
    with pytest.raises(IqError) as err:
        await e.plugin["xep_0012"].get_last_activity(bob.jid)
    assert err.value.condition == "forbidden"
