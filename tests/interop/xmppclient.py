"""A thin slixmpp client wrapper for the interop tests.

`Client` is a real `slixmpp.ClientXMPP`; it only adds:
- connection to the test server's STARTTLS or direct-TLS port with the
  server's self-signed certificate trusted,
- queues of received messages, presences, roster pushes and stream errors,
- a record of the SASL mechanisms it actually put on the wire,
- `login()` that resolves to success or raises `LoginFailed`,
- no automatic subscription handling, so tests drive it explicitly.
"""

from __future__ import annotations

import asyncio
import logging
import xml.etree.ElementTree as ET

import slixmpp
from slixmpp.exceptions import IqError
from slixmpp.features.feature_mechanisms.stanza import Auth

from ternserver import Account, TernServer

log = logging.getLogger(__name__)

#: How long to wait for one expected stanza or event.
WAIT = 5.0


class LoginFailed(Exception):
    """The client did not reach session_start; `reason` says why."""

    def __init__(self, reason: str, stanza=None):
        super().__init__(reason)
        self.reason = reason
        self.stanza = stanza


class Client(slixmpp.ClientXMPP):
    """slixmpp client bound to one TernServer."""

    def __init__(self, server: TernServer, jid: str, password: str, *,
                 mech: str | None = None, direct_tls: bool = False,
                 plugins: tuple[str, ...] = ()):
        super().__init__(jid, password, sasl_mech=mech)
        self.tern = server
        self.direct_tls = direct_tls
        self.ssl_context = server.client_ssl_context()
        self.enable_plaintext = False
        if direct_tls:
            self.enable_starttls = False
            self.enable_direct_tls = True
            self.tern_port = server.direct_port
        else:
            self.enable_starttls = True
            self.enable_direct_tls = False
            self.tern_port = server.starttls_port
        self.whitespace_keepalive = False
        self.use_aiodns = False
        # Tests answer subscription requests themselves.
        self.auto_authorize = None
        self.auto_subscribe = False
        for plugin in plugins:
            self.register_plugin(plugin)

        self.sent_mechanisms: list[str] = []
        self.messages: asyncio.Queue = asyncio.Queue()
        self.message_errors: asyncio.Queue = asyncio.Queue()
        self.presences: asyncio.Queue = asyncio.Queue()
        self.roster_pushes: asyncio.Queue = asyncio.Queue()
        self.stream_errors: list = []
        self.tls_version: str | None = None
        self._outcome: asyncio.Future = self.loop.create_future()
        self.gone: asyncio.Future = self.loop.create_future()

        self.add_filter("out", self._record_auth)
        self.add_event_handler("session_start", self._on_session_start)
        self.add_event_handler("failed_auth", self._on_failed_auth)
        self.add_event_handler("failed_all_auth", self._on_failed_all_auth)
        self.add_event_handler("connection_failed", self._on_connection_failed)
        self.add_event_handler("disconnected", self._on_disconnected)
        self.add_event_handler("stream_error", self._on_stream_error)
        self.add_event_handler("message", self.messages.put_nowait)
        self.add_event_handler("message_error", self.message_errors.put_nowait)
        self.add_event_handler("presence", self.presences.put_nowait)
        self.add_event_handler("roster_update", self._on_roster_update)

    # -- event plumbing ------------------------------------------------------

    def _record_auth(self, stanza):
        if isinstance(stanza, Auth):
            self.sent_mechanisms.append(stanza["mechanism"])
        return stanza

    def _settle(self, exc: BaseException | None) -> None:
        if not self._outcome.done():
            if exc is None:
                self._outcome.set_result(True)
            else:
                self._outcome.set_exception(exc)

    def _on_session_start(self, _event) -> None:
        sock = self.socket
        if sock is not None and hasattr(sock, "version"):
            self.tls_version = sock.version()
        self._settle(None)

    def _on_failed_auth(self, stanza) -> None:
        self._settle(LoginFailed(f"SASL failure: {stanza['condition']}", stanza))

    def _on_failed_all_auth(self, _event) -> None:
        self._settle(LoginFailed("no SASL mechanism left"))

    def _on_connection_failed(self, err) -> None:
        self.cancel_connection_attempt()
        self._settle(LoginFailed(f"connection failed: {err}"))

    def _on_disconnected(self, reason) -> None:
        self._settle(LoginFailed(f"disconnected before session start: {reason}"))
        if not self.gone.done():
            self.gone.set_result(reason)

    def _on_roster_update(self, iq) -> None:
        # slixmpp raises roster_update for get_roster() results too; only
        # server-initiated roster sets are pushes.
        if iq["type"] == "set":
            self.roster_pushes.put_nowait(iq)

    def _on_stream_error(self, error) -> None:
        self.stream_errors.append(error)

    # -- public helpers ---------------------------------------------------------

    async def login(self, timeout: float = 15.0) -> "Client":
        """Connect, authenticate, bind; raise LoginFailed otherwise."""
        self.connect("127.0.0.1", self.tern_port)
        try:
            await asyncio.wait_for(asyncio.shield(self._outcome), timeout)
        except asyncio.TimeoutError:
            raise LoginFailed(f"no session_start within {timeout}s") from None
        return self

    async def online(self, priority: int = 0) -> "Client":
        """Log in, fetch the roster and send initial presence.

        Returns once the server has answered an IQ sent after the presence,
        so the resource is available before any other client acts on it.
        """
        await self.login()
        await self.get_roster(timeout=WAIT)
        self.send_presence(ppriority=priority)
        await self.sync()
        return self

    async def sync(self) -> None:
        """Round-trip a ping to the server: everything sent before it has
        been processed by the server when this returns."""
        iq = self.Iq()
        iq["type"] = "get"
        iq["to"] = self.boundjid.domain
        iq.append(ET.Element("{urn:xmpp:ping}ping"))
        try:
            await iq.send(timeout=WAIT)
        except IqError:
            pass  # an error reply is still a reply

    async def close(self) -> None:
        if self.transport is not None:
            self.disconnect(wait=1.0)
            try:
                await asyncio.wait_for(asyncio.shield(self.gone), 3)
            except asyncio.TimeoutError:
                self.abort()
        else:
            self.cancel_connection_attempt()

    async def next_message(self, timeout: float = WAIT):
        return await asyncio.wait_for(self.messages.get(), timeout)

    async def next_message_error(self, timeout: float = WAIT):
        return await asyncio.wait_for(self.message_errors.get(), timeout)

    async def next_roster_push(self, timeout: float = WAIT):
        return await asyncio.wait_for(self.roster_pushes.get(), timeout)

    async def wait_presence(self, predicate, timeout: float = WAIT):
        """Return the first received presence satisfying `predicate`.

        Presences that do not match are dropped.
        """
        async def scan():
            while True:
                pres = await self.presences.get()
                if predicate(pres):
                    return pres
        return await asyncio.wait_for(scan(), timeout)

    async def no_message(self, within: float = 1.0) -> None:
        """Assert that no chat message arrives within `within` seconds."""
        try:
            msg = await asyncio.wait_for(self.messages.get(), within)
        except asyncio.TimeoutError:
            return
        raise AssertionError(f"unexpected message: {msg}")

    async def roster_items(self) -> dict[str, dict]:
        """Fetch the full roster from the server: {bare jid: item dict}.

        Sent without a roster version, so the server must return every item
        (slixmpp's get_roster() would ask for a delta).
        """
        iq = self.Iq()
        iq["type"] = "get"
        iq.enable("roster")
        result = await iq.send(timeout=WAIT)
        assert result["type"] == "result", result
        items = result["roster"]["items"]
        return {str(jid): dict(item) for jid, item in items.items()}


class ClientFactory:
    """Creates clients for one test and closes them all afterwards."""

    def __init__(self, server: TernServer):
        self.server = server
        self.clients: list[Client] = []

    def __call__(self, account: Account | str, password: str | None = None, *,
                 resource: str | None = None, **kwargs) -> Client:
        if isinstance(account, Account):
            jid, pw = account.jid, account.password
        else:
            jid, pw = account, password
        if password is not None:
            pw = password
        if resource:
            jid = f"{jid}/{resource}"
        client = Client(self.server, jid, pw, **kwargs)
        self.clients.append(client)
        return client

    async def close_all(self) -> None:
        await asyncio.gather(*(c.close() for c in self.clients),
                             return_exceptions=True)
