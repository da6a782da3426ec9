"""Dynamic domains with `tern ctl domain …` against a running node, seen by
slixmpp: a domain added at runtime takes logins and messages; disabled, it
closes its sessions with <host-gone/>, refuses logins with <host-unknown/>
and bounces stanzas with <service-unavailable/>; enabled again, it serves
again; removed, its accounts are gone. Static domains cannot be changed."""

from __future__ import annotations

import asyncio

import pytest

from xmppclient import LoginFailed

DYN = "dyn.test"


def ok(res) -> str:
    assert res.returncode == 0, f"exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res.stdout


def refused(res) -> str:
    assert res.returncode != 0, f"unexpected success\n{res.stdout}"
    return res.stderr + res.stdout


async def test_dynamic_domain_lifecycle(server, clients):
    ok(server.ctl("domain", "add", "--domain", DYN, "--host-type", "default"))
    # The same add twice is not an error.
    ok(server.ctl("domain", "add", "--domain", DYN, "--host-type", "default"))
    listing = ok(server.ctl("domain", "list"))
    assert DYN in listing and "localhost" in listing, listing

    dyn_user = server.new_account("dyn", domain=DYN)
    local_user = server.new_account("loc")
    dyn = clients(dyn_user, resource="phone")
    await dyn.online()
    local = clients(local_user)
    await local.online()

    local.send_message(mto=dyn_user.jid, mbody="hello dynamic", mtype="chat")
    msg = await dyn.next_message()
    assert msg["body"] == "hello dynamic"

    # Disable: the live session is closed with <host-gone/> …
    ok(server.ctl("domain", "disable", "--domain", DYN))
    await asyncio.wait_for(asyncio.shield(dyn.gone), 5)
    assert [e["condition"] for e in dyn.stream_errors] == ["host-gone"]
    details = ok(server.ctl("domain", "details", "--domain", DYN))
    assert "disabled" in details, details
    # … logins are refused …
    again = clients(dyn_user)
    with pytest.raises(LoginFailed):
        await again.login(timeout=10)
    # … and stanzas to its users bounce.
    local.send_message(mto=dyn_user.jid, mbody="anyone?", mtype="chat")
    error = await local.next_message_error()
    assert error["error"]["condition"] == "service-unavailable"

    # Enable: the same account logs in again.
    ok(server.ctl("domain", "enable", "--domain", DYN))
    back = clients(dyn_user, resource="back")
    await back.online()
    local.send_message(mto=dyn_user.jid, mbody="welcome back", mtype="chat")
    assert (await back.next_message())["body"] == "welcome back"

    # Remove: sessions end, the account is deleted, the domain is unknown.
    removed = ok(server.ctl("domain", "remove", "--domain", DYN))
    assert "1" in removed, removed
    await asyncio.wait_for(asyncio.shield(back.gone), 5)
    refused(server.ctl("domain", "details", "--domain", DYN))
    ok(server.ctl("domain", "add", "--domain", DYN, "--host-type", "default"))
    gone = clients(dyn_user)
    with pytest.raises(LoginFailed):
        await gone.login(timeout=10)


def test_static_and_bad_domain_changes_are_refused(server):
    text = refused(server.ctl("domain", "remove", "--domain", "localhost"))
    assert "static" in text, text
    text = refused(server.ctl("domain", "disable", "--domain", "localhost"))
    assert "static" in text, text
    text = refused(server.ctl("domain", "add", "--domain", "other.test",
                              "--host-type", "no-such-type"))
    assert "no-such-type" in text, text
    ok(server.ctl("domain", "add", "--domain", "typed.test", "--host-type", "default"))
    refused(server.ctl("domain", "remove", "--domain", "never-added.test"))
