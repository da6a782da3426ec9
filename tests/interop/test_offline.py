"""XEP-0160 offline messages with slixmpp: stored while the account has no
available resource, delivered in order at its initial presence with a
XEP-0203 delay, once."""

from __future__ import annotations

import datetime

from xmppclient import Client


def send(sender: Client, to: str, body: str, mtype: str = "chat") -> None:
    sender.make_message(mto=to, mbody=body, mtype=mtype).send()


async def test_offline_messages_arrive_in_order_at_initial_presence(server, clients):
    alice, bob = server.new_account("alice"), server.new_account("bob")
    a = clients(alice, resource="a")
    await a.online()
    sent_at = datetime.datetime.now(datetime.timezone.utc)
    bodies = [f"while you were away {n}" for n in range(1, 8)]
    for n, body in enumerate(bodies):
        send(a, bob.jid, body, mtype="chat" if n % 2 == 0 else "normal")
        if n == 3:
            send(a, bob.jid, "breaking news", mtype="headline")
    await a.sync()

    # Logged in but not yet available: nothing is delivered.
    b = clients(bob, resource="phone", plugins=("xep_0203",))
    await b.login()
    await b.get_roster()
    await b.no_message(within=0.5)

    b.send_presence()
    got = [await b.next_message() for _ in bodies]
    assert [m["body"] for m in got] == bodies
    for m in got:
        assert m["from"].full == f"{alice.jid}/a"
        assert m["delay"]["from"].full == "localhost"
        stamp = m["delay"]["stamp"]
        assert stamp.tzinfo is not None
        # The stamp is when the server stored it: after sending began, not in the future.
        assert sent_at - datetime.timedelta(seconds=1) <= stamp
        assert stamp <= datetime.datetime.now(datetime.timezone.utc)
    await b.no_message(within=1.0)  # the headline was never stored
    assert not a.message_errors.qsize(), "no message was bounced"

    # Delivered once: a second session of bob finds nothing stored.
    b2 = clients(bob, resource="desk")
    await b2.online()
    await b2.no_message(within=1.0)


async def test_a_hundred_stored_messages_arrive_in_order(server, clients):
    alice, bob = server.new_account("alice"), server.new_account("bob")
    a = clients(alice, resource="a")
    await a.online()
    bodies = [f"stored {n:03d}" for n in range(100)]
    for body in bodies:
        send(a, bob.jid, body)
    await a.sync()
    b = clients(bob, resource="phone")
    await b.online()
    got = [(await b.next_message())["body"] for _ in bodies]
    assert got == bodies
    await b.no_message(within=0.5)
