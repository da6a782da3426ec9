"""XEP-0045 multi-user chat with slixmpp's plugin (first part of issue 7): a room created on
join and configured as instant, occupants' presence with muc#user items and status codes,
groupchat messages with stanza ids, history on join with delays, the subject, private
messages, nick changes and conflicts, kicks, bans, self-ping (XEP-0410), service discovery, and
a persistent room that survives a restart of the server."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

import pytest
from slixmpp.exceptions import IqError, PresenceError

from ternserver import TernServer
from xmppclient import WAIT, Client

PLUGINS = ("xep_0030", "xep_0045", "xep_0004")
MUC_USER = "{http://jabber.org/protocol/muc#user}"


def codes(presence) -> set[str]:
    return {s.get("code") for s in presence.xml.iter(f"{MUC_USER}status")}


async def instant_room(owner: Client, room: str, nick: str):
    """Joins (creating) `room` and accepts the default configuration."""
    pres, _, _, _ = await owner.plugin["xep_0045"].join_muc_wait(room, nick, timeout=WAIT)
    assert {"110", "201"} <= codes(pres), pres
    form = owner.plugin["xep_0004"].make_form(ftype="submit")
    await owner.plugin["xep_0045"].set_room_config(room, form)
    return pres


def muc_presences(client: Client) -> asyncio.Queue:
    """Presence from rooms (slixmpp's MUC plugin takes them out of the plain presence flow)."""
    queue: asyncio.Queue = asyncio.Queue()
    client.add_event_handler("groupchat_presence", queue.put_nowait)
    return queue


async def wait_muc(queue: asyncio.Queue, predicate) -> object:
    async def scan():
        while True:
            pres = await queue.get()
            if predicate(pres):
                return pres
    return await asyncio.wait_for(scan(), WAIT)


def groupchat_queue(client: Client) -> asyncio.Queue:
    queue: asyncio.Queue = asyncio.Queue()
    client.add_event_handler("groupchat_message", queue.put_nowait)
    return queue


async def next_body(queue: asyncio.Queue) -> object:
    while True:
        msg = await asyncio.wait_for(queue.get(), WAIT)
        if msg["body"]:
            return msg


async def test_a_room_from_creation_to_conversation(server, clients):
    alice, bob, carol = (server.new_account(n) for n in ("alice", "bob", "carol"))
    room = "lounge@muc.localhost"
    a = clients(alice, resource="a", plugins=PLUGINS)
    b = clients(bob, resource="b", plugins=PLUGINS)
    c = clients(carol, resource="c", plugins=PLUGINS)
    for client in (a, b, c):
        await client.online()
    a_msgs, b_msgs = groupchat_queue(a), groupchat_queue(b)
    a_pres, b_pres, c_pres = muc_presences(a), muc_presences(b), muc_presences(c)

    # Before it is configured, a created room admits nobody else.
    joined = await a.plugin["xep_0045"].join_muc_wait(room, "Alice", timeout=WAIT)
    assert {"110", "201"} <= codes(joined[0])
    item = joined[0].xml.find(f"{MUC_USER}x/{MUC_USER}item")
    assert item.get("affiliation") == "owner" and item.get("role") == "moderator"
    with pytest.raises(PresenceError) as err:
        await b.plugin["xep_0045"].join_muc_wait(room, "Bob", timeout=WAIT)
    assert err.value.condition == "item-not-found"
    form = a.plugin["xep_0004"].make_form(ftype="submit")
    await a.plugin["xep_0045"].set_room_config(room, form)

    pres, subject, occupants, history = await b.plugin["xep_0045"].join_muc_wait(
        room, "Bob", timeout=WAIT)
    assert "110" in codes(pres) and "201" not in codes(pres)
    # slixmpp counts its own presence among the occupants.
    assert {str(p["from"]) for p in occupants} == {f"{room}/Alice", f"{room}/Bob"}
    assert not subject["subject"] and history == []
    seen = await wait_muc(a_pres, lambda p: str(p["from"]) == f"{room}/Bob")
    assert seen.xml.find(f"{MUC_USER}x/{MUC_USER}item").get("role") == "participant"

    # A message reaches every occupant, the sender too, with a stanza id by the room.
    b.send_message(mto=room, mbody="hello room", mtype="groupchat")
    for queue in (a_msgs, b_msgs):
        msg = await next_body(queue)
        assert str(msg["from"]) == f"{room}/Bob" and msg["body"] == "hello room"
        sid = msg.xml.find("{urn:xmpp:sid:0}stanza-id")
        assert sid is not None and sid.get("by") == room

    # The owner sets the subject; carol joins later and gets history (delayed), then it.
    a.plugin["xep_0045"].set_subject(room, "Welcome")
    await asyncio.sleep(0.3)
    pres, subject, occupants, history = await c.plugin["xep_0045"].join_muc_wait(
        room, "Carol", maxstanzas=10, timeout=WAIT)
    assert subject["subject"] == "Welcome"
    assert str(subject["from"]) == f"{room}/Alice"
    assert [m["body"] for m in history] == ["hello room"]
    assert history[0]["delay"]["from"] == room
    assert {str(p["from"]) for p in occupants} == {f"{room}/Alice", f"{room}/Bob", f"{room}/Carol"}

    # A nick taken by someone else is refused; private messages go to one occupant.
    dave = server.new_account("dave")
    d = clients(dave, resource="d", plugins=PLUGINS)
    await d.online()
    with pytest.raises(PresenceError) as err:
        await d.plugin["xep_0045"].join_muc_wait(room, "Bob", timeout=WAIT)
    assert err.value.condition == "conflict"
    c.send_message(mto=f"{room}/Bob", mbody="psst", mtype="chat")
    got = await b.next_message()
    while got["type"] == "groupchat":
        got = await b.next_message()
    assert got["body"] == "psst" and str(got["from"]) == f"{room}/Carol"

    # Carol changes her nick: 303 with the new nick, then her new presence.
    c.send_presence(pto=f"{room}/Caroline")
    changed = await wait_muc(
        a_pres, lambda p: str(p["from"]) == f"{room}/Carol" and p["type"] == "unavailable")
    assert "303" in codes(changed)
    assert changed.xml.find(f"{MUC_USER}x/{MUC_USER}item").get("nick") == "Caroline"
    await wait_muc(a_pres, lambda p: str(p["from"]) == f"{room}/Caroline")

    # Self-ping (XEP-0410): joined → result; someone not in the room → an error.
    ping = c.make_iq_get(ito=f"{room}/Caroline")
    ping.append(ET.Element("{urn:xmpp:ping}ping"))
    await ping.send(timeout=WAIT)
    ping = d.make_iq_get(ito=f"{room}/Dave")
    ping.append(ET.Element("{urn:xmpp:ping}ping"))
    with pytest.raises(IqError) as err:
        await ping.send(timeout=WAIT)
    assert err.value.condition == "not-acceptable"

    # The owner kicks Bob (307) and bans Carol (301): both are out.
    await a.plugin["xep_0045"].set_role(room, "Bob", "none")
    kicked = await wait_muc(
        b_pres, lambda p: str(p["from"]) == f"{room}/Bob" and p["type"] == "unavailable")
    assert {"307", "110"} <= codes(kicked)
    await a.plugin["xep_0045"].set_affiliation(room, "outcast", jid=carol.jid)
    banned = await wait_muc(
        c_pres, lambda p: str(p["from"]) == f"{room}/Caroline" and p["type"] == "unavailable")
    assert "301" in codes(banned)
    with pytest.raises(PresenceError) as err:
        await c.plugin["xep_0045"].join_muc_wait(room, "Carol", timeout=WAIT)
    assert err.value.condition == "forbidden"
    outcasts = await a.plugin["xep_0045"].get_affiliation_list(room, "outcast")
    assert outcasts == [carol.jid]

    # The service lists the room, and the room describes itself.
    items = await d.plugin["xep_0030"].get_items(jid="muc.localhost")
    assert room in [i[0] for i in items["disco_items"]["items"]]
    info = await d.plugin["xep_0030"].get_info(jid=room)
    assert "muc_temporary" in info["disco_info"]["features"]

    # A configuration change is announced to the occupants (104; 172: now non-anonymous).
    notices: asyncio.Queue = asyncio.Queue()

    def catch_notice(stanza):
        if stanza.xml.find(f"{MUC_USER}x/{MUC_USER}status[@code='104']") is not None:
            notices.put_nowait(stanza)
        return stanza
    a.add_filter("in", catch_notice)
    form = a.plugin["xep_0004"].make_form(ftype="submit")
    form.add_field(var="FORM_TYPE", ftype="hidden",
                   value="http://jabber.org/protocol/muc#roomconfig")
    form.add_field(var="muc#roomconfig_whois", value="anyone")
    await a.plugin["xep_0045"].set_room_config(room, form)
    notice = await asyncio.wait_for(notices.get(), WAIT)
    assert {"104", "172"} <= codes(notice)


async def test_the_room_goes_when_its_last_occupant_leaves(server, clients):
    erin = server.new_account("erin")
    e = clients(erin, resource="e", plugins=PLUGINS)
    await e.online()
    room = "brief@muc.localhost"
    await instant_room(e, room, "Erin")
    e_pres = muc_presences(e)
    e.plugin["xep_0045"].leave_muc(room, "Erin")
    await wait_muc(e_pres, lambda p: str(p["from"]) == f"{room}/Erin" and p["type"] == "unavailable")
    with pytest.raises(IqError) as err:
        await e.plugin["xep_0030"].get_info(jid=room)
    assert err.value.condition == "item-not-found"


async def test_a_persistent_room_survives_a_restart(tmp_path_factory):
    server = TernServer(tmp_path_factory.mktemp("muc-restart")).start()
    try:
        frank, gina = server.new_account("frank"), server.new_account("gina")
        room = "standing@muc.localhost"
        f = Client(server, f"{frank.jid}/f", frank.password, plugins=PLUGINS)
        await f.online()
        await f.plugin["xep_0045"].join_muc_wait(room, "Frank", timeout=WAIT)
        form = f.plugin["xep_0004"].make_form(ftype="submit")
        form.add_field(var="FORM_TYPE", ftype="hidden",
                       value="http://jabber.org/protocol/muc#roomconfig")
        form.add_field(var="muc#roomconfig_persistentroom", value="1")
        form.add_field(var="muc#roomconfig_roomname", value="The standing room")
        await f.plugin["xep_0045"].set_room_config(room, form)
        f.plugin["xep_0045"].set_subject(room, "Still here")
        await asyncio.sleep(0.3)
        await f.close()

        server.stop()
        server.start()
        g = Client(server, f"{gina.jid}/g", gina.password, plugins=PLUGINS)
        try:
            await g.online()
            info = await g.plugin["xep_0030"].get_info(jid=room)
            assert "muc_persistent" in info["disco_info"]["features"]
            pres, subject, _, _ = await g.plugin["xep_0045"].join_muc_wait(
                room, "Gina", timeout=WAIT)
            assert "201" not in codes(pres), "the room existed"
            assert subject["subject"] == "Still here"
            item = pres.xml.find(f"{MUC_USER}x/{MUC_USER}item")
            assert item.get("affiliation") == "none"
        finally:
            await g.close()
    finally:
        server.stop()


async def test_room_archive_and_occupant_ids(server, clients):
    """XEP-0313 on the room's JID (paged with XEP-0059) and XEP-0421 occupant ids: the same
    id for one user in presence and messages, another for another user."""
    hana, ivan = server.new_account("hana"), server.new_account("ivan")
    plugins = PLUGINS + ("xep_0313", "xep_0059")
    h = clients(hana, resource="h", plugins=plugins)
    i = clients(ivan, resource="i", plugins=plugins)
    await h.online()
    await i.online()
    room = "archive@muc.localhost"
    pres = await instant_room(h, room, "Hana")
    hana_id = pres.xml.find("{urn:xmpp:occupant-id:0}occupant-id").get("id")
    ivan_pres, _, _, _ = await i.plugin["xep_0045"].join_muc_wait(room, "Ivan", timeout=WAIT)
    ivan_id = ivan_pres.xml.find("{urn:xmpp:occupant-id:0}occupant-id").get("id")
    assert hana_id and ivan_id and hana_id != ivan_id
    h_msgs = groupchat_queue(h)
    for n in range(30):
        sender = h if n % 2 == 0 else i
        sender.send_message(mto=room, mbody=f"m{n}", mtype="groupchat")
        msg = await next_body(h_msgs)
        assert msg["body"] == f"m{n}"
        expected = hana_id if n % 2 == 0 else ivan_id
        assert msg.xml.find("{urn:xmpp:occupant-id:0}occupant-id").get("id") == expected
    info = await i.plugin["xep_0030"].get_info(jid=room)
    assert "urn:xmpp:mam:2" in info["disco_info"]["features"]
    assert "urn:xmpp:occupant-id:0" in info["disco_info"]["features"]
    bodies = []
    async for result in i.plugin["xep_0313"].iterate(jid=room, rsm={"max": 7}):
        forwarded = result["mam_result"]["forwarded"]["stanza"]
        assert str(forwarded["from"]).startswith(f"{room}/")
        bodies.append(forwarded["body"])
    assert bodies == [f"m{n}" for n in range(30)]
    backwards = []
    async for result in i.plugin["xep_0313"].iterate(jid=room, reverse=True, rsm={"max": 9}):
        backwards.append(result["mam_result"]["forwarded"]["stanza"]["body"])
    assert backwards == [f"m{n}" for n in reversed(range(30))]


@pytest.fixture(scope="module")
def strict(tmp_path_factory):
    srv = TernServer(tmp_path_factory.mktemp("muc-limits"), extra_sections={
        "modules.muc": {"max_message_size": "1KiB", "max_messages_per_second": 2},
    }).start()
    yield srv
    srv.stop()


async def test_limits_registration_and_voice(strict):
    server = strict
    jo, kai, lee = (server.new_account(n) for n in ("jo", "kai", "lee"))
    j = Client(server, f"{jo.jid}/j", jo.password, plugins=PLUGINS)
    k = Client(server, f"{kai.jid}/k", kai.password, plugins=PLUGINS)
    le = Client(server, f"{lee.jid}/l", lee.password, plugins=PLUGINS)
    try:
        for client in (j, k, le):
            await client.online()
        room = "strict@muc.localhost"
        await j.plugin["xep_0045"].join_muc_wait(room, "Jo", timeout=WAIT)
        form = j.plugin["xep_0004"].make_form(ftype="submit")
        form.add_field(var="FORM_TYPE", ftype="hidden",
                       value="http://jabber.org/protocol/muc#roomconfig")
        form.add_field(var="muc#roomconfig_moderatedroom", value="1")
        await j.plugin["xep_0045"].set_room_config(room, form)

        # kai registers a nick (and so becomes a member); nobody else may take it.
        iq = k.make_iq_set(ito=room)
        query = ET.SubElement(iq.xml, "{jabber:iq:register}query")
        x = ET.SubElement(query, "{jabber:x:data}x", {"type": "submit"})
        for var, value in (("FORM_TYPE", "http://jabber.org/protocol/muc#register"),
                           ("muc#register_roomnick", "Kai")):
            field = ET.SubElement(x, "{jabber:x:data}field", {"var": var})
            ET.SubElement(field, "{jabber:x:data}value").text = value
        await iq.send(timeout=WAIT)
        with pytest.raises(PresenceError) as err:
            await le.plugin["xep_0045"].join_muc_wait(room, "Kai", timeout=WAIT)
        assert err.value.condition == "conflict"
        members = await j.plugin["xep_0045"].get_affiliation_list(room, "member")
        assert members == [kai.jid]

        # lee joins the moderated room as a visitor: no voice until a moderator grants it.
        # The moderator's client sees the request (taken off the wire: slixmpp's plugins keep
        # form messages from rooms to themselves).
        j_msgs: asyncio.Queue = asyncio.Queue()

        def catch_forms(stanza):
            if stanza.xml.tag == "{jabber:client}message":
                j_msgs.put_nowait(stanza)
            return stanza
        j.add_filter("in", catch_forms)
        pres, _, _, _ = await le.plugin["xep_0045"].join_muc_wait(room, "Lee", timeout=WAIT)
        assert pres.xml.find(f"{MUC_USER}x/{MUC_USER}item").get("role") == "visitor"
        le.send_message(mto=room, mbody="may I?", mtype="groupchat")
        error = await le.next_message_error()
        assert error["error"]["condition"] == "forbidden"
        le.plugin["xep_0045"].request_voice(room, "participant")
        while True:
            request = await asyncio.wait_for(j_msgs.get(), WAIT)
            form = request.xml.find("{jabber:x:data}x")
            if form is not None:
                break
        fields = {f.get("var"): f.findtext("{jabber:x:data}value")
                  for f in form.iter("{jabber:x:data}field")}
        assert fields["FORM_TYPE"] == "http://jabber.org/protocol/muc#request"
        assert fields["muc#roomnick"] == "Lee" and fields["muc#jid"] == lee.jid
        answer = j.make_message(mto=room)
        x = ET.SubElement(answer.xml, "{jabber:x:data}x", {"type": "submit"})
        for var, value in (("FORM_TYPE", "http://jabber.org/protocol/muc#request"),
                           ("muc#role", "participant"), ("muc#roomnick", "Lee"),
                           ("muc#request_allow", "true")):
            field = ET.SubElement(x, "{jabber:x:data}field", {"var": var})
            ET.SubElement(field, "{jabber:x:data}value").text = value
        answer.send()
        le_pres = muc_presences(le)
        await wait_muc(le_pres, lambda p: str(p["from"]) == f"{room}/Lee" and
                       p.xml.find(f"{MUC_USER}x/{MUC_USER}item").get("role") == "participant")

        # Limits: a message over 1 KiB is refused; more than a burst of 4 at 2/s is slowed down.
        le.send_message(mto=room, mbody="x" * 2000, mtype="groupchat")
        error = await le.next_message_error()
        assert error["error"]["condition"] == "not-acceptable"
        for n in range(8):
            le.send_message(mto=room, mbody=f"fast {n}", mtype="groupchat")
        error = await le.next_message_error()
        assert error["error"]["condition"] == "resource-constraint"
    finally:
        for client in (j, k, le):
            await client.close()


async def test_requests_to_an_occupant_are_forwarded(server, clients):
    """An occupant asks another occupant's vCard at its room JID (as clients do for avatars):
    the room forwards it and the answer comes back from the occupant JID."""
    mia, ned = server.new_account("mia"), server.new_account("ned")
    plugins = PLUGINS + ("xep_0054",)
    m = clients(mia, resource="m", plugins=plugins)
    n = clients(ned, resource="n", plugins=plugins)
    await m.online()
    await n.online()
    vcard = n.plugin["xep_0054"].make_vcard()
    vcard["FN"] = "Ned Occupant"
    await n.plugin["xep_0054"].publish_vcard(vcard)
    room = "faces@muc.localhost"
    await instant_room(m, room, "Mia")
    await n.plugin["xep_0045"].join_muc_wait(room, "Ned", timeout=WAIT)
    got = await m.plugin["xep_0054"].get_vcard(f"{room}/Ned", cached=False, timeout=WAIT)
    assert got["vcard_temp"]["FN"] == "Ned Occupant"
    assert str(got["from"]) == f"{room}/Ned"
    # Someone who is not an occupant gets nothing forwarded.
    other = server.new_account("oli")
    o = clients(other, resource="o", plugins=plugins)
    await o.online()
    with pytest.raises(IqError) as err:
        await o.plugin["xep_0054"].get_vcard(f"{room}/Ned", cached=False, timeout=WAIT)
    assert err.value.condition == "item-not-found"


async def test_admin_edits_are_all_or_nothing_and_roles_shape_presence(server, clients):
    """A muc#admin request with several items applies all of them or none (one bad item leaves
    the lists as they were); `presencebroadcast` hides visitors from the others, and
    `getmemberlist` decides whether a participant may read the member list."""
    pat, quinn, rae = (server.new_account(n) for n in ("pat", "quinn", "rae"))
    p = clients(pat, resource="p", plugins=PLUGINS)
    q = clients(quinn, resource="q", plugins=PLUGINS)
    r = clients(rae, resource="r", plugins=PLUGINS)
    for client in (p, q, r):
        await client.online()
    room = "lists@muc.localhost"
    await instant_room(p, room, "Pat")

    async def admin_set(items):
        iq = p.make_iq_set(ito=room)
        query = ET.SubElement(iq.xml, "{http://jabber.org/protocol/muc#admin}query")
        for attrs in items:
            ET.SubElement(query, "{http://jabber.org/protocol/muc#admin}item", attrs)
        return await iq.send(timeout=WAIT)

    # Two members and an item without a JID: refused, and neither member was added.
    with pytest.raises(IqError) as err:
        await admin_set([{"affiliation": "member", "jid": quinn.jid},
                         {"affiliation": "member", "jid": rae.jid},
                         {"affiliation": "member"}])
    assert err.value.condition == "bad-request"
    assert await p.plugin["xep_0045"].get_affiliation_list(room, "member") == []
    # Making the only owner a member in the same request as a new member: conflict, nothing.
    with pytest.raises(IqError) as err:
        await admin_set([{"affiliation": "member", "jid": quinn.jid},
                         {"affiliation": "member", "jid": pat.jid}])
    assert err.value.condition == "conflict"
    assert await p.plugin["xep_0045"].get_affiliation_list(room, "member") == []
    # Both good items: both applied.
    await admin_set([{"affiliation": "member", "jid": quinn.jid},
                     {"affiliation": "member", "jid": rae.jid}])
    members = await p.plugin["xep_0045"].get_affiliation_list(room, "member")
    assert sorted(members) == sorted([quinn.jid, rae.jid])

    # Moderated, visitors' presence not broadcast, the member list for moderators only.
    form = p.plugin["xep_0004"].make_form(ftype="submit")
    form.add_field(var="FORM_TYPE", ftype="hidden",
                   value="http://jabber.org/protocol/muc#roomconfig")
    form.add_field(var="muc#roomconfig_presencebroadcast", ftype="list-multi",
                   value=["moderator", "participant"])
    form.add_field(var="muc#roomconfig_getmemberlist", ftype="list-multi", value=["moderator"])
    await p.plugin["xep_0045"].set_room_config(room, form)
    config = await p.plugin["xep_0045"].get_room_config(room)
    values = config.get_fields()["muc#roomconfig_presencebroadcast"]["value"]
    assert sorted(values) == ["moderator", "participant"], values

    # quinn joins as a participant (a member) and is seen, but may not read the member list;
    # rae joins as a participant too, then pat makes her a visitor: she sees her new role,
    # nobody else hears of her any more.
    p_pres = muc_presences(p)
    await q.plugin["xep_0045"].join_muc_wait(room, "Quinn", timeout=WAIT)
    await wait_muc(p_pres, lambda x: str(x["from"]) == f"{room}/Quinn")
    with pytest.raises(IqError) as err:
        await q.plugin["xep_0045"].get_affiliation_list(room, "member")
    assert err.value.condition == "forbidden"
    r_pres = muc_presences(r)
    await r.plugin["xep_0045"].join_muc_wait(room, "Rae", timeout=WAIT)
    await wait_muc(p_pres, lambda x: str(x["from"]) == f"{room}/Rae")
    await p.plugin["xep_0045"].set_role(room, "Rae", "visitor")
    own = await wait_muc(r_pres, lambda x: str(x["from"]) == f"{room}/Rae" and
                         x.xml.find(f"{MUC_USER}x/{MUC_USER}item").get("role") == "visitor")
    assert "110" in codes(own)
    # A newcomer does not see the visitor among the occupants, and pat got no visitor update.
    sam = server.new_account("sam")
    s = clients(sam, resource="s", plugins=PLUGINS)
    await s.online()
    s_pres = muc_presences(s)
    await s.plugin["xep_0045"].join_muc_wait(room, "Sam", timeout=WAIT)
    seen = set()
    while not s_pres.empty():
        seen.add(str(s_pres.get_nowait()["from"]))
    assert f"{room}/Pat" in seen and f"{room}/Quinn" in seen
    assert f"{room}/Rae" not in seen
    # pat hears of sam (who joined after the role change), and heard nothing of rae before.
    while True:
        x = await asyncio.wait_for(p_pres.get(), WAIT)
        if str(x["from"]) == f"{room}/Sam":
            break
        assert str(x["from"]) != f"{room}/Rae", x

    # With the member list open to participants, quinn may read it.
    form = p.plugin["xep_0004"].make_form(ftype="submit")
    form.add_field(var="FORM_TYPE", ftype="hidden",
                   value="http://jabber.org/protocol/muc#roomconfig")
    form.add_field(var="muc#roomconfig_getmemberlist", ftype="list-multi",
                   value=["moderator", "participant"])
    await p.plugin["xep_0045"].set_room_config(room, form)
    members = await q.plugin["xep_0045"].get_affiliation_list(room, "member")
    assert sorted(members) == sorted([quinn.jid, rae.jid])
