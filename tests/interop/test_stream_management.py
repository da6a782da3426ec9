"""XEP-0198 stream management with slixmpp's plugin, through a TCP relay the test can freeze
and cut: 20 messages sent while the relay swallows everything the server writes reach the
client exactly once when it resumes; when it comes back too late, resumption is refused and the
20 are waiting in offline storage."""

from __future__ import annotations

import asyncio

import pytest

from ternserver import TernServer
from xmppclient import WAIT, Client


class Relay:
    """A TCP relay on loopback between a client and the server. `freeze()` swallows what the
    server writes (the client never sees it, as on a dead mobile link); `cut()` aborts every
    connection at once, without a TCP close handshake reaching either side first."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.frozen = False
        self.connections: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self.server: asyncio.base_events.Server | None = None
        self.port = 0

    async def start(self) -> "Relay":
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, client_r, client_w):
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.connections.append((client_w, server_w))

        async def pipe(reader, writer, swallow):
            try:
                while data := await reader.read(65536):
                    if swallow():
                        continue
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.transport.abort()

        asyncio.ensure_future(pipe(client_r, server_w, lambda: False))
        asyncio.ensure_future(pipe(server_r, client_w, lambda: self.frozen))

    def freeze(self) -> None:
        self.frozen = True

    def cut(self) -> None:
        for client_w, server_w in self.connections:
            client_w.transport.abort()
            server_w.transport.abort()
        self.connections.clear()
        self.frozen = False

    def close(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()


def event_future(client: Client, name: str) -> asyncio.Future:
    fut = asyncio.get_running_loop().create_future()

    def handler(event):
        if not fut.done():
            fut.set_result(event)

    client.add_event_handler(name, handler)
    return fut


async def bodies(client: Client, count: int) -> list[str]:
    got = []
    while len(got) < count:
        msg = await client.next_message(timeout=10)
        if msg["body"]:
            got.append(msg["body"])
    return got


async def connect_through(client: Client, relay: Relay) -> None:
    client.tern_port = relay.port
    enabled = event_future(client, "sm_enabled")
    await client.online()
    await asyncio.wait_for(enabled, WAIT)


async def lose_twenty(alice: Client, bob: Client, relay: Relay) -> None:
    """Bob sends 20 messages that the server writes to alice's connection but she never
    receives; then the connection is cut."""
    relay.freeze()
    for n in range(1, 21):
        bob.send_message(mto=f"{alice.boundjid.full}", mbody=f"m{n}", mtype="chat")
    await bob.sync()
    await asyncio.sleep(0.5)  # written by the server, swallowed by the relay
    gone = alice.gone
    relay.cut()
    await asyncio.wait_for(asyncio.shield(gone), WAIT)


async def test_resumption_after_a_cut_delivers_twenty_unacked_messages_once(server):
    alice, bob = server.new_account("alice"), server.new_account("bob")
    relay = await Relay(server.starttls_port).start()
    a = Client(server, f"{alice.jid}/phone", alice.password, plugins=("xep_0198",))
    b = Client(server, f"{bob.jid}/desk", bob.password)
    try:
        await connect_through(a, relay)
        assert a.plugin["xep_0198"].sm_id, "resumption granted"
        await b.online()
        await lose_twenty(a, b, relay)
        assert a.messages.empty()

        resumed = event_future(a, "session_resumed")
        a.gone = asyncio.get_running_loop().create_future()
        a.connect("127.0.0.1", relay.port)
        await asyncio.wait_for(resumed, 15)
        assert await bodies(a, 20) == [f"m{n}" for n in range(1, 21)]
        await a.no_message(within=1.0)

        # The resumed stream carries on, both ways.
        b.send_message(mto=a.boundjid.full, mbody="after", mtype="chat")
        assert await bodies(a, 1) == ["after"]
        a.send_message(mto=b.boundjid.full, mbody="back", mtype="chat")
        got = await b.next_message()
        assert got["body"] == "back" and got["from"] == a.boundjid
    finally:
        await a.close()
        await b.close()
        relay.close()


@pytest.fixture(scope="module")
def short_resume(tmp_path_factory):
    srv = TernServer(tmp_path_factory.mktemp("sm-short"),
                     extra_sections={"modules.stream_management": {"resume_timeout": "2s"}}).start()
    yield srv
    srv.stop()


async def test_too_late_resumption_is_refused_and_the_messages_wait_offline(short_resume):
    server = short_resume
    alice, bob = server.new_account("alice"), server.new_account("bob")
    relay = await Relay(server.starttls_port).start()
    a = Client(server, f"{alice.jid}/phone", alice.password, plugins=("xep_0198",))
    b = Client(server, f"{bob.jid}/desk", bob.password)
    try:
        await connect_through(a, relay)
        await b.online()
        await lose_twenty(a, b, relay)
        await asyncio.sleep(3)  # past the 2 s the session waits

        count = server.ctl("offline", "count", "--user", alice.jid)
        assert count.returncode == 0, count.stderr
        assert count.stdout.strip() == "20", count.stdout

        failed = event_future(a, "sm_failed")
        started = event_future(a, "session_start")
        a.gone = asyncio.get_running_loop().create_future()
        a.connect("127.0.0.1", relay.port)
        await asyncio.wait_for(failed, 15)
        await asyncio.wait_for(started, 15)
        a.send_presence()
        assert await bodies(a, 20) == [f"m{n}" for n in range(1, 21)]
        await a.no_message(within=1.0)
    finally:
        await a.close()
        await b.close()
        relay.close()
