"""slixmpp clients on a three-datacenter mesh made by `tern dev mesh`.

One `tern dev mesh --dcs 3` for the module (three `tern serve` processes joined by QUIC
bridges and the routing table's Raft). Users homed in different datacenters chat and share
presence; one user with sessions in two datacenters gets a bare-JID message in both; a user
logging in at a datacenter that is not its home gets the offline messages kept at its home.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from ternserver import Account, TernServer, tern_binary
from xmppclient import Client

DCS = 3
_names = itertools.count(1)


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _base_port() -> int:
    """A base port B such that every datacenter's ports (B + 1000·K … + 329) are free."""
    for _ in range(50):
        base = random.randrange(20000, 60000 - 1000 * (DCS + 1), 10)
        ports = [base + 1000 * k + off for k in range(1, DCS + 1)
                 for off in (0, 1, 58, 78, 329)]
        if all(_free(p) for p in ports):
            return base
    raise RuntimeError("no free port range for the mesh")


class MeshDc(TernServer):
    """Datacenter K of a `tern dev mesh`, seen as a server the client helpers can use."""

    def __init__(self, root: Path, k: int, base: int):  # noqa: super-init not called
        self.binary = tern_binary()
        self.name = f"dc{k}"
        self.workdir = root / self.name
        self.data_dir = self.workdir / "data"
        self.config_path = self.workdir / "tern.toml"
        self.stderr_path = self.workdir / "tern.log"
        self.stdout_path = self.workdir / "tern.stdout"
        b = base + 1000 * k
        self.starttls_port, self.direct_port, self.admin_port = b, b + 1, b + 329
        self.proc = None

    def wait_home(self, account: Account, timeout: float = 30.0) -> None:
        """Until this datacenter's copy of the routing table knows where `account` lives."""
        deadline = time.monotonic() + timeout
        while self.ctl("mesh", "home", "--jid", account.jid).returncode != 0:
            assert time.monotonic() < deadline, f"{account.jid} unknown at {self.name}"
            time.sleep(0.1)


class Mesh:
    def __init__(self, root: Path):
        self.root = root
        self.base = _base_port()
        self.log = root / "dev-mesh.out"
        self.proc: subprocess.Popen | None = None
        self.dcs = [MeshDc(root, k, self.base) for k in range(1, DCS + 1)]

    def start(self, timeout: float = 90.0) -> "Mesh":
        out = open(self.log, "wb")
        self.proc = subprocess.Popen(
            [str(tern_binary()), "dev", "mesh", "--dcs", str(DCS), "--dir",
             str(self.root), "--base-port", str(self.base)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while b"datacenters are up" not in self.log.read_bytes():
            assert self.proc.poll() is None, self.log.read_text(errors="replace")
            assert time.monotonic() < deadline, self.log.read_text(errors="replace")
            time.sleep(0.2)
        # Every bridge up, a Raft leader known, and every datacenter declared in the routing
        # table (each node writes its own in the background once the table is reachable:
        # registering an account homed in it before then is refused), at every datacenter.
        every_dc = "datacenters: " + ", ".join(f"dc{k}" for k in range(1, DCS + 1))
        for dc in self.dcs:
            while True:
                status = dc.ctl("mesh", "status").stdout
                bridges = next((line for line in status.splitlines()
                                if line.startswith("bridges: ")), "")
                leader = any(line.startswith("leader: ") and line[8:].strip().isdigit()
                             for line in status.splitlines())
                declared = every_dc in status.splitlines()
                if leader and declared and bridges.count(" up ") == DCS - 1:
                    break
                assert time.monotonic() < deadline, status
                time.sleep(0.2)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def account(self, home: int) -> Account:
        """A new account registered through (so homed in) datacenter `home` (1-based)."""
        n = next(_names)
        account = self.dcs[home - 1].register(f"mesh{n}", f"pw-mesh-{n}-Secret!")
        for dc in self.dcs:
            dc.wait_home(account)
        return account


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    m = Mesh(tmp_path_factory.mktemp("mesh")).start()
    yield m
    m.stop()


@pytest.fixture
async def connect(mesh):
    made: list[Client] = []

    def factory(account: Account, dc: int, resource: str, **kwargs) -> Client:
        client = Client(mesh.dcs[dc - 1], f"{account.jid}/{resource}", account.password,
                        **kwargs)
        made.append(client)
        return client

    yield factory
    await asyncio.gather(*(c.close() for c in made), return_exceptions=True)


def _from(pres, jid: str) -> bool:
    return str(pres["from"]) == jid


async def test_users_of_different_datacenters_chat_and_share_presence(mesh, connect):
    alice, bob = mesh.account(1), mesh.account(2)
    a = await connect(alice, 1, "desk").online()
    b = await connect(bob, 2, "phone").online()

    a.send_presence(pto=bob.jid, ptype="subscribe")
    request = await b.wait_presence(lambda p: p["type"] == "subscribe")
    assert str(request["from"]) == alice.jid
    b.send_presence(pto=alice.jid, ptype="subscribed")
    # alice's roster (kept at dc1) records the subscription, and bob's presence reaches her.
    await a.wait_presence(lambda p: _from(p, f"{bob.jid}/phone") and p["type"] == "available")
    items = await a.roster_items()
    assert items[bob.jid]["subscription"] == "to"

    a.send_message(mto=f"{bob.jid}/phone", mbody="hello from dc1", mtype="chat")
    got = await b.next_message()
    assert got["body"] == "hello from dc1"
    assert str(got["from"]) == f"{alice.jid}/desk"
    b.send_message(mto=alice.jid, mbody="hello from dc2", mtype="chat")
    got = await a.next_message()
    assert got["body"] == "hello from dc2"

    # bob's presence change crosses the mesh to his subscriber.
    b.send_presence(pshow="away")
    away = await a.wait_presence(lambda p: _from(p, f"{bob.jid}/phone") and p["show"] == "away")
    assert away["show"] == "away"

    # alice logs in again: her initial presence probes bob at his home, dc2, which answers
    # with his current presence.
    await a.close()
    again = await connect(alice, 1, "laptop").online()
    probed = await again.wait_presence(lambda p: _from(p, f"{bob.jid}/phone"))
    assert probed["show"] == "away"


async def test_one_user_with_sessions_in_two_datacenters(mesh, connect):
    carol, dave = mesh.account(3), mesh.account(2)
    home = await connect(carol, 3, "home").online()
    away = await connect(carol, 1, "travel").online()
    d = await connect(dave, 2, "desk").online()

    d.send_message(mto=carol.jid, mbody="to every carol", mtype="chat")
    for client in (home, away):
        got = await client.next_message()
        assert got["body"] == "to every carol"
        assert str(got["from"]) == f"{dave.jid}/desk"

    # Each session sees the other's presence (the home broadcasts to the account's resources).
    away.send_presence(pshow="dnd")
    await home.wait_presence(lambda p: _from(p, f"{carol.jid}/travel") and p["show"] == "dnd")

    away.send_message(mto=f"{dave.jid}/desk", mbody="from the edge", mtype="chat")
    got = await d.next_message()
    assert got["body"] == "from the edge"
    assert str(got["from"]) == f"{carol.jid}/travel"


async def test_offline_messages_reach_a_user_logging_in_elsewhere(mesh, connect):
    erin, frank = mesh.account(1), mesh.account(3)
    f = await connect(frank, 3, "desk").online()
    for n in range(3):
        f.send_message(mto=erin.jid, mbody=f"while away {n}", mtype="chat")
    await f.sync()
    # erin's messages wait at her home, dc1; she logs in at dc2.
    await asyncio.sleep(0.5)
    e = await connect(erin, 2, "phone").online()
    bodies = [(await e.next_message())["body"] for _ in range(3)]
    assert bodies == [f"while away {n}" for n in range(3)]


async def test_carbons_across_datacenters(mesh, connect):
    gina, hal = mesh.account(1), mesh.account(3)
    desk = connect(gina, 1, "desk", plugins=("xep_0280",))
    phone = connect(gina, 2, "phone", plugins=("xep_0280",))
    await desk.online()
    await phone.online()
    h = await connect(hal, 3, "h").online()
    await desk.plugin["xep_0280"].enable()
    await phone.plugin["xep_0280"].enable()
    received: asyncio.Queue = asyncio.Queue()
    sent: asyncio.Queue = asyncio.Queue()
    phone.add_event_handler("carbon_received", received.put_nowait)
    desk.add_event_handler("carbon_sent", sent.put_nowait)

    # hal (dc3) writes to gina's desk (dc1, her home): her phone at dc2 gets the copy.
    h.send_message(mto=f"{gina.jid}/desk", mbody="to the desk", mtype="chat")
    assert (await desk.next_message())["body"] == "to the desk"
    carbon = await asyncio.wait_for(received.get(), 5)
    assert carbon["carbon_received"]["body"] == "to the desk"
    # The phone (an edge session at dc2) answers: the desk at dc1 sees what it sent.
    phone.send_message(mto=f"{hal.jid}/h", mbody="from the phone", mtype="chat")
    assert (await h.next_message())["body"] == "from the phone"
    carbon = await asyncio.wait_for(sent.get(), 5)
    assert carbon["carbon_sent"]["body"] == "from the phone"


async def test_pep_notifications_reach_a_contact_in_another_datacenter(mesh, connect):
    """XEP-0163 across the mesh: ivy (homed in dc1) publishes her nickname; jack, homed in dc3
    and connected to dc2, gets the notification because his client's capabilities (asked for
    over the mesh by ivy's home) want it; he also gets it again when he comes back online."""
    ivy, jack = mesh.account(1), mesh.account(3)
    plugins = ("xep_0030", "xep_0060", "xep_0115", "xep_0163", "xep_0172")
    i = await connect(ivy, 1, "desk", plugins=plugins).online()
    j = connect(jack, 2, "phone", plugins=plugins)
    nicks: asyncio.Queue = asyncio.Queue()
    j.add_event_handler("user_nick_publish", nicks.put_nowait)
    await j.online()
    for watcher, target, target_acc in ((i, j, jack), (j, i, ivy)):
        watcher.send_presence(pto=target_acc.jid, ptype="subscribe")
        await target.wait_presence(lambda p: p["type"] == "subscribe")
        target.send_presence(pto=watcher.boundjid.bare, ptype="subscribed")
        await watcher.wait_presence(lambda p: p["type"] == "subscribed")
    j.send_presence()
    await i.wait_presence(lambda p: _from(p, f"{jack.jid}/phone") and p["type"] == "available")
    await asyncio.sleep(0.5)

    await i.plugin["xep_0172"].publish_nick("Ivy from dc1")
    event = await asyncio.wait_for(nicks.get(), 10)
    assert str(event["from"]) == ivy.jid
    assert event["pubsub_event"]["items"]["item"]["nick"]["nick"] == "Ivy from dc1"

    # jack connects again elsewhere (dc1): the last item comes with his new presence.
    await j.close()
    j2 = connect(jack, 1, "laptop", plugins=plugins)
    again: asyncio.Queue = asyncio.Queue()
    j2.add_event_handler("user_nick_publish", again.put_nowait)
    await j2.online()
    event = await asyncio.wait_for(again.get(), 10)
    assert event["pubsub_event"]["items"]["item"]["nick"]["nick"] == "Ivy from dc1"


async def test_a_room_homed_in_one_datacenter_joined_from_another(mesh, connect):
    """XEP-0045 across the mesh: kim (dc1) creates a room, which the routing table homes at dc1;
    leo, homed in dc3 and connected to dc2, joins it and they chat."""
    kim, leo = mesh.account(1), mesh.account(3)
    plugins = ("xep_0030", "xep_0045", "xep_0004")
    k = await connect(kim, 1, "desk", plugins=plugins).online()
    l = await connect(leo, 2, "phone", plugins=plugins).online()
    room = "crossing@muc.localhost"
    await k.plugin["xep_0045"].join_muc_wait(room, "Kim", timeout=10)
    await k.plugin["xep_0045"].set_room_config(room, k.plugin["xep_0004"].make_form(ftype="submit"))
    await asyncio.sleep(1.0)  # the room's home reaches every datacenter's table
    k_msgs: asyncio.Queue = asyncio.Queue()
    k.add_event_handler("groupchat_message", k_msgs.put_nowait)
    _, _, occupants, _ = await l.plugin["xep_0045"].join_muc_wait(room, "Leo", timeout=10)
    assert {str(p["from"]) for p in occupants} == {f"{room}/Kim", f"{room}/Leo"}
    l.send_message(mto=room, mbody="hello from dc2", mtype="groupchat")
    while True:
        msg = await asyncio.wait_for(k_msgs.get(), 10)
        if msg["body"]:
            break
    assert msg["body"] == "hello from dc2" and str(msg["from"]) == f"{room}/Leo"
