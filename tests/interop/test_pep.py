"""XEP-0163 personal eventing with slixmpp's plugins: +notify through XEP-0115 capabilities
(the server asks the contact's client and verifies the hash), the last item when a contact
comes online, access models (presence, XEP-0223 whitelist), XEP-0402 bookmarks kept in step
with XEP-0048 ones in private storage, and XEP-0398 avatar conversion with vCards."""

from __future__ import annotations

import asyncio
import base64
import hashlib

import pytest
from slixmpp.exceptions import IqError
from slixmpp.plugins.xep_0402.stanza import Conference

from xmppclient import WAIT, Client

PEP_PLUGINS = ("xep_0030", "xep_0060", "xep_0115", "xep_0163", "xep_0172")


async def subscribe_both(x: Client, y: Client) -> None:
    for watcher, target in ((x, y), (y, x)):
        watcher.send_presence(pto=target.boundjid.bare, ptype="subscribe")
        await target.wait_presence(lambda p: p["type"] == "subscribe")
        target.send_presence(pto=watcher.boundjid.bare, ptype="subscribed")
        await watcher.wait_presence(lambda p: p["type"] == "subscribed")


def nick_events(client: Client) -> asyncio.Queue:
    queue: asyncio.Queue = asyncio.Queue()
    client.add_event_handler("user_nick_publish", queue.put_nowait)
    return queue


async def test_publish_notifies_contacts_that_want_it(server, clients):
    alice, bob, carol = (server.new_account(n) for n in ("alice", "bob", "carol"))
    a = clients(alice, resource="a", plugins=PEP_PLUGINS)
    b = clients(bob, resource="b", plugins=PEP_PLUGINS)
    # carol's client does not ask for nicknames (no +notify).
    c = clients(carol, resource="c", plugins=("xep_0030", "xep_0060"))
    b_nicks = nick_events(b)
    await a.online()
    await b.online()
    await c.online()
    info = await a.plugin["xep_0030"].get_info(jid=alice.jid)
    assert "http://jabber.org/protocol/pubsub#publish-options" in info["disco_info"]["features"]
    assert ("pubsub", "pep", None, None) in info["disco_info"]["identities"]
    await subscribe_both(a, b)
    await subscribe_both(a, c)
    # Presence with capabilities after the subscriptions: alice's home learns bob's.
    b.send_presence()
    c.send_presence()
    await b.sync()
    await asyncio.sleep(0.5)

    await a.plugin["xep_0172"].publish_nick("Alice in Wonderland")
    event = await asyncio.wait_for(b_nicks.get(), WAIT)
    assert event["from"].bare == alice.jid
    assert event["pubsub_event"]["items"]["item"]["nick"]["nick"] == "Alice in Wonderland"
    await c.no_message(within=0.5)

    # A contact with a subscription reads the node; a stranger may not.
    items = await b.plugin["xep_0060"].get_items(alice.jid, "http://jabber.org/protocol/nick")
    assert len(items["pubsub"]["items"]) == 1
    dave = server.new_account("dave")
    d = clients(dave, resource="d", plugins=("xep_0060",))
    await d.online()
    with pytest.raises(IqError) as err:
        await d.plugin["xep_0060"].get_items(alice.jid, "http://jabber.org/protocol/nick")
    assert err.value.condition == "not-authorized"

    # A contact coming online gets the last item at once.
    b2 = clients(bob, resource="b2", plugins=PEP_PLUGINS)
    b2_nicks = nick_events(b2)
    await b2.online()
    event = await asyncio.wait_for(b2_nicks.get(), 10)
    assert event["pubsub_event"]["items"]["item"]["nick"]["nick"] == "Alice in Wonderland"


async def test_private_pep_storage_is_the_owners_only(server, clients):
    alice, bob = server.new_account("alice"), server.new_account("bob")
    a = clients(alice, resource="a", plugins=("xep_0060", "xep_0223", "xep_0049", "xep_0048"))
    b = clients(bob, resource="b", plugins=("xep_0060",))
    await a.online()
    await b.online()
    await subscribe_both(a, b)
    bookmarks = a.plugin["xep_0048"].stanza.Bookmarks()
    bookmarks.add_conference("secret@muc.localhost", "alice")
    await a.plugin["xep_0223"].store(bookmarks, node="storage:bookmarks", id="current")
    got = await a.plugin["xep_0223"].retrieve("storage:bookmarks")
    conferences = list(got["pubsub"]["items"]["item"]["bookmarks"]["conferences"])
    assert conferences[0]["jid"] == "secret@muc.localhost"
    with pytest.raises(IqError) as err:
        await b.plugin["xep_0060"].get_items(alice.jid, "storage:bookmarks")
    assert err.value.condition == "not-allowed"
    # The node keeps its access model: publishing with another one is refused.
    form = a.plugin["xep_0004"].stanza.Form()
    form["type"] = "submit"
    form.add_field(var="FORM_TYPE", ftype="hidden",
                   value="http://jabber.org/protocol/pubsub#publish-options")
    form.add_field(var="pubsub#access_model", value="open")
    with pytest.raises(IqError) as err:
        await a.plugin["xep_0060"].publish(None, "storage:bookmarks", id="current",
                                          payload=bookmarks, options=form)
    assert err.value.condition == "conflict"


async def test_bookmarks_compat_between_private_storage_and_pep(server, clients):
    alice = server.new_account("alice")
    a = clients(alice, resource="a", plugins=("xep_0060", "xep_0049", "xep_0048", "xep_0402"))
    await a.online()
    info = await a.plugin["xep_0030"].get_info(jid=alice.jid)
    assert "urn:xmpp:bookmarks:1#compat" in info["disco_info"]["features"]

    # Stored the XEP-0048 way: the XEP-0402 node shows it.
    legacy = a.plugin["xep_0048"].stanza.Bookmarks()
    legacy.add_conference("old@muc.localhost", "al", name="Old room", autojoin=True)
    await a.plugin["xep_0048"].set_bookmarks(legacy, method="xep_0049")
    items = await a.plugin["xep_0060"].get_items(alice.jid, "urn:xmpp:bookmarks:1")
    found = {i["id"]: i["conference"] for i in items["pubsub"]["items"]}
    assert set(found) == {"old@muc.localhost"}
    assert found["old@muc.localhost"]["name"] == "Old room"
    assert found["old@muc.localhost"]["autojoin"]
    assert found["old@muc.localhost"]["nick"] == "al"

    # Published the XEP-0402 way: private storage shows both.
    conference = Conference()
    conference["name"] = "New room"
    conference["autojoin"] = False
    conference["nick"] = "alice"
    form = a.plugin["xep_0004"].stanza.Form()
    form["type"] = "submit"
    form.add_field(var="FORM_TYPE", ftype="hidden",
                   value="http://jabber.org/protocol/pubsub#publish-options")
    form.add_field(var="pubsub#persist_items", value="true")
    form.add_field(var="pubsub#max_items", value="max")
    form.add_field(var="pubsub#access_model", value="whitelist")
    await a.plugin["xep_0060"].publish(None, "urn:xmpp:bookmarks:1", id="new@muc.localhost",
                                      payload=conference, options=form)
    got = await a.plugin["xep_0048"].get_bookmarks(method="xep_0049")
    rooms = {c["jid"]: c for c in got["private"]["bookmarks"]["conferences"]}
    assert set(rooms) == {"old@muc.localhost", "new@muc.localhost"}
    assert rooms["new@muc.localhost"]["name"] == "New room"
    assert not rooms["new@muc.localhost"]["autojoin"]

    # Removed the XEP-0048 way: retracted from the node.
    legacy = a.plugin["xep_0048"].stanza.Bookmarks()
    legacy.add_conference("new@muc.localhost", "alice", name="New room")
    await a.plugin["xep_0048"].set_bookmarks(legacy, method="xep_0049")
    items = await a.plugin["xep_0060"].get_items(alice.jid, "urn:xmpp:bookmarks:1")
    assert [i["id"] for i in items["pubsub"]["items"]] == ["new@muc.localhost"]


async def test_avatar_conversion_between_vcard_and_pep(server, clients):
    alice, bob = server.new_account("alice"), server.new_account("bob")
    a = clients(alice, resource="a", plugins=("xep_0054", "xep_0060", "xep_0084"))
    b = clients(bob, resource="b", plugins=("xep_0054", "xep_0060", "xep_0084"))
    await a.online()
    await b.online()
    await subscribe_both(a, b)
    info = await a.plugin["xep_0030"].get_info(jid=alice.jid)
    assert "urn:xmpp:pep-vcard-conversion:0" in info["disco_info"]["features"]

    # A vCard photo becomes the PEP avatar.
    photo = b"\x89PNG fake image bytes"
    vcard = a.plugin["xep_0054"].make_vcard()
    vcard["PHOTO"]["TYPE"] = "image/png"
    vcard["PHOTO"]["BINVAL"] = photo
    await a.plugin["xep_0054"].publish_vcard(vcard)
    digest = hashlib.sha1(photo).hexdigest()
    meta = await b.plugin["xep_0060"].get_items(alice.jid, "urn:xmpp:avatar:metadata")
    info = meta.xml.find(".//{urn:xmpp:avatar:metadata}info")
    assert info.get("id") == digest and info.get("type") == "image/png"
    assert info.get("bytes") == str(len(photo))
    data = await b.plugin["xep_0060"].get_items(alice.jid, "urn:xmpp:avatar:data",
                                               item_ids=[digest])
    payload = data.xml.find(".//{urn:xmpp:avatar:data}data")
    assert base64.b64decode(payload.text) == photo

    # A PEP avatar becomes the vCard photo.
    new_photo = b"another picture"
    new_id = hashlib.sha1(new_photo).hexdigest()
    await a.plugin["xep_0084"].publish_avatar(new_photo)
    await a.plugin["xep_0084"].publish_avatar_metadata(
        [{"id": new_id, "type": "image/jpeg", "bytes": len(new_photo)}])
    got = await b.plugin["xep_0054"].get_vcard(alice.jid)
    assert got["vcard_temp"]["PHOTO"]["BINVAL"] == new_photo
    assert got["vcard_temp"]["PHOTO"]["TYPE"] == "image/jpeg"
