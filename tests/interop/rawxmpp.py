"""Raw-socket XMPP client for tests that must send exactly chosen bytes.

`RawClient` speaks just enough XMPP to reach a given state quickly
(stream open, STARTTLS, SASL PLAIN, resource bind) and then lets the test
write arbitrary bytes and read what the server answers, element by element.
Incoming data is parsed with an incremental expat parser; top-level children
of the server's <stream:stream> are returned as ElementTree elements.
"""

from __future__ import annotations

import base64
import socket
import ssl
import time
import xml.etree.ElementTree as ET

STREAM_NS = "http://etherx.jabber.org/streams"
CLIENT_NS = "jabber:client"
TLS_NS = "urn:ietf:params:xml:ns:xmpp-tls"
SASL_NS = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND_NS = "urn:ietf:params:xml:ns:xmpp-bind"
SESSION_NS = "urn:ietf:params:xml:ns:xmpp-session"
STREAMS_ERR_NS = "urn:ietf:params:xml:ns:xmpp-streams"
STANZAS_ERR_NS = "urn:ietf:params:xml:ns:xmpp-stanzas"


def q(ns: str, tag: str) -> str:
    """Clark-notation tag name."""
    return f"{{{ns}}}{tag}"


class StreamClosed(Exception):
    """The server ended the stream (</stream:stream>) or the connection."""


class ProtocolError(AssertionError):
    """The server answered something the helper did not expect."""


def stream_header(to: str) -> str:
    return ("<?xml version='1.0'?>"
            f"<stream:stream to='{to}' version='1.0' xml:lang='en' "
            f"xmlns='{CLIENT_NS}' xmlns:stream='{STREAM_NS}'>")


def error_condition(error: ET.Element, ns: str) -> str | None:
    """Local name of the defined condition child of an error element."""
    for child in error:
        if child.tag.startswith(f"{{{ns}}}") and child.tag != q(ns, "text"):
            return child.tag.split("}", 1)[1]
    return None


class RawClient:
    """A blocking XMPP connection driven byte by byte by a test."""

    def __init__(self, host: str, port: int, *, domain: str = "localhost",
                 ssl_context: ssl.SSLContext | None = None,
                 direct_tls: bool = False, timeout: float = 5.0):
        self.domain = domain
        self.ssl_context = ssl_context
        self.timeout = timeout
        self.sock: socket.socket = socket.create_connection((host, port), timeout)
        if direct_tls:
            assert ssl_context is not None, "direct TLS needs an ssl context"
            self.sock = ssl_context.wrap_socket(self.sock)
        self.sock.settimeout(timeout)
        self.eof = False
        self.stream_open: ET.Element | None = None
        self.stream_ended = False
        self._reset_parser()

    # -- low level ------------------------------------------------------------

    def _reset_parser(self) -> None:
        self._parser = ET.XMLPullParser(("start", "end"))
        self._depth = 0
        self._pending: list[ET.Element] = []
        self.stream_open = None

    def send(self, data: str | bytes) -> None:
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _feed(self, data: bytes) -> None:
        self._parser.feed(data)
        for event, elem in self._parser.read_events():
            if event == "start":
                if self._depth == 0:
                    self.stream_open = elem
                self._depth += 1
            else:
                self._depth -= 1
                if self._depth == 0:
                    self.stream_ended = True
                elif self._depth == 1:
                    self._pending.append(elem)
                    if self.stream_open is not None:
                        self.stream_open.remove(elem)

    def _recv_some(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no data from server in time")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError,
                ConnectionResetError, BrokenPipeError):
            data = b""
        except socket.timeout:
            raise TimeoutError("no data from server in time") from None
        if not data:
            self.eof = True
            return
        self._feed(data)

    def read_element(self, timeout: float | None = None) -> ET.Element:
        """Next top-level element; StreamClosed if the stream ends first."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while not self._pending:
            if self.stream_ended or self.eof:
                raise StreamClosed(
                    "stream ended" if self.stream_ended else "connection closed")
            self._recv_some(deadline)
        return self._pending.pop(0)

    def read_stream_open(self, timeout: float | None = None) -> ET.Element:
        deadline = time.monotonic() + (timeout or self.timeout)
        while self.stream_open is None:
            if self.eof:
                raise StreamClosed("connection closed before stream header")
            self._recv_some(deadline)
        return self.stream_open

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Wait until the server closes the TCP connection.

        Returns True if it did within the timeout. Elements still arriving
        are collected and can be read afterwards with read_element.
        """
        deadline = time.monotonic() + (timeout or self.timeout)
        while not self.eof:
            try:
                self._recv_some(deadline)
            except TimeoutError:
                return False
            except ET.ParseError:
                # Data after the closing stream tag is not our concern here.
                self._parser = ET.XMLPullParser(("start", "end"))
                self._depth = 0
        return True

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    # -- stream errors ------------------------------------------------------------

    def expect_stream_error(self, timeout: float | None = None) -> str:
        """Read until a <stream:error/>; return its condition name.

        Fails if a different top-level element or the end of the stream comes
        first.
        """
        elem = self.read_element(timeout)
        if elem.tag != q(STREAM_NS, "error"):
            raise ProtocolError(
                f"expected a stream error, got {ET.tostring(elem).decode()}")
        cond = error_condition(elem, STREAMS_ERR_NS)
        if cond is None:
            raise ProtocolError(
                "stream error without a defined condition: "
                + ET.tostring(elem).decode())
        return cond

    # -- XMPP steps -----------------------------------------------------------------

    def open_stream(self) -> ET.Element:
        """Send a stream header, read the answer header; return <features/>."""
        self._reset_parser()
        self.stream_ended = False
        self.send(stream_header(self.domain))
        self.read_stream_open()
        features = self.read_element()
        if features.tag != q(STREAM_NS, "features"):
            raise ProtocolError(
                f"expected stream features, got {ET.tostring(features).decode()}")
        return features

    def starttls(self, restart: bool = True) -> ET.Element | None:
        """STARTTLS on a fresh connection; return the post-TLS features.

        With restart=False the TLS handshake is done but no new stream
        header is sent, so the test can send its own.
        """
        assert self.ssl_context is not None, "STARTTLS needs an ssl context"
        features = self.open_stream()
        if features.find(q(TLS_NS, "starttls")) is None:
            raise ProtocolError("server did not offer STARTTLS")
        self.send(f"<starttls xmlns='{TLS_NS}'/>")
        answer = self.read_element()
        if answer.tag != q(TLS_NS, "proceed"):
            raise ProtocolError(f"STARTTLS answered {answer.tag}")
        self.sock = self.ssl_context.wrap_socket(self.sock)
        self.sock.settimeout(self.timeout)
        if not restart:
            self._reset_parser()
            self.stream_ended = False
            return None
        return self.open_stream()

    def mechanisms(self, features: ET.Element) -> list[str]:
        mechs = features.find(q(SASL_NS, "mechanisms"))
        if mechs is None:
            return []
        return [m.text or "" for m in mechs.findall(q(SASL_NS, "mechanism"))]

    def send_plain_auth(self, user: str, password: str) -> None:
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        self.send(f"<auth xmlns='{SASL_NS}' mechanism='PLAIN'>{token}</auth>")

    def auth_plain(self, user: str, password: str) -> ET.Element:
        """SASL PLAIN; on success restart the stream and return features."""
        self.send_plain_auth(user, password)
        answer = self.read_element()
        if answer.tag != q(SASL_NS, "success"):
            raise ProtocolError(
                f"SASL PLAIN did not succeed: {ET.tostring(answer).decode()}")
        return self.open_stream()

    def bind(self, resource: str = "raw") -> str:
        """Bind a resource; return the full JID the server assigned."""
        self.send(f"<iq type='set' id='bind1'><bind xmlns='{BIND_NS}'>"
                  f"<resource>{resource}</resource></bind></iq>")
        answer = self.read_element()
        jid = answer.find(f"{q(BIND_NS, 'bind')}/{q(BIND_NS, 'jid')}")
        if answer.get("type") != "result" or jid is None or not jid.text:
            raise ProtocolError(
                f"bind failed: {ET.tostring(answer).decode()}")
        return jid.text

    def login(self, user: str, password: str, resource: str = "raw") -> str:
        """STARTTLS + PLAIN + bind; return the bound full JID."""
        self.starttls()
        self.auth_plain(user, password)
        return self.bind(resource)

    def iq(self, payload: str, *, to: str | None = None, type_: str = "get",
           id_: str = "iq1", timeout: float | None = None) -> ET.Element:
        """Send an IQ and return the response with the same id.

        Other stanzas that arrive in between are skipped.
        """
        to_attr = f" to='{to}'" if to else ""
        self.send(f"<iq type='{type_}' id='{id_}'{to_attr}>{payload}</iq>")
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            elem = self.read_element(max(0.01, deadline - time.monotonic()))
            if elem.tag == q(CLIENT_NS, "iq") and elem.get("id") == id_:
                return elem
