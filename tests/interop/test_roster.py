"""Roster management (RFC 6121 §2) seen through two resources of one account."""

from __future__ import annotations

from slixmpp.exceptions import IqError


def push_item(iq, jid: str) -> dict:
    items = {str(k): dict(v) for k, v in iq["roster"]["items"].items()}
    assert list(items) == [jid], f"roster push should carry exactly {jid}: {items}"
    return items[jid]


async def test_roster_add_and_remove_are_pushed_to_other_resource(server, clients):
    alice = server.new_account("alice")
    bob = server.new_account("bob")
    r1 = clients(alice, resource="r1")
    r2 = clients(alice, resource="r2")
    await r1.online()
    await r2.online()

    await r1.update_roster(bob.jid, name="Bob", groups=["Friends", "Work"],
                           timeout=5)
    push = await r2.next_roster_push()
    assert push["from"].bare in ("", alice.jid)
    assert push["to"].full in ("", f"{alice.jid}/r2")
    assert push["type"] == "set"
    item = push_item(push, bob.jid)
    assert item["name"] == "Bob"
    assert item["subscription"] == "none"
    assert sorted(item["groups"]) == ["Friends", "Work"]

    # The resource that made the change is an interested resource too.
    own = await r1.next_roster_push()
    assert push_item(own, bob.jid)["name"] == "Bob"

    # Persisted: a roster get from either resource returns the item.
    items = await r2.roster_items()
    assert items[bob.jid]["name"] == "Bob"
    assert sorted(items[bob.jid]["groups"]) == ["Friends", "Work"]

    # Rename, then remove.
    await r1.update_roster(bob.jid, name="Robert", groups=["Friends"], timeout=5)
    push = await r2.next_roster_push()
    assert push_item(push, bob.jid)["name"] == "Robert"
    await r1.next_roster_push()

    await r1.del_roster_item(bob.jid)
    push = await r2.next_roster_push()
    assert push_item(push, bob.jid)["subscription"] == "remove"
    assert bob.jid not in await r1.roster_items()


async def test_roster_is_empty_for_new_account(server, clients):
    carol = server.new_account("carol")
    client = clients(carol)
    await client.login()
    assert await client.roster_items() == {}


async def test_roster_set_with_two_items_is_rejected(server, clients):
    # RFC 6121 §2.3.3: a roster set must contain exactly one item.
    dave = server.new_account("dave")
    client = clients(dave)
    await client.login()
    iq = client.Iq()
    iq["type"] = "set"
    iq["roster"]["items"] = {
        "x1@localhost": {"name": "X1", "subscription": "none", "groups": []},
        "x2@localhost": {"name": "X2", "subscription": "none", "groups": []},
    }
    try:
        await iq.send(timeout=5)
    except IqError as err:
        assert err.iq["error"]["condition"] == "bad-request"
    else:
        raise AssertionError("roster set with two items was accepted")
    assert await client.roster_items() == {}
