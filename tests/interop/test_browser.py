"""A real web client in a real browser (issue 8): Strophe.js, loaded from npm into headless
Chromium, logs in to Tern over XMPP over WebSocket (RFC 7395, `ws://…/ws`) and over BOSH
(XEP-0124/0206, `http://…/http-bind`) on a plain-HTTP listener (SCRAM, as PLAIN is not
offered without TLS), exchanges presence and chat messages with a contact logged in with
slixmpp on the ordinary c2s port, and logs out, which the contact sees.

The page (tests/browser/client.html) reports every step, with the raw XML Strophe put on and
took off the wire, by POSTing JSON to a small HTTP server run here, which also serves the page
and the Strophe bundle. No WebDriver is involved. Chromium and the npm package are installed
by tests/browser/install.sh; when either is missing these tests fail, they do not skip.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import uuid
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlencode

import pytest

from ternserver import TernServer

HERE = Path(__file__).resolve().parent
BROWSER_DIR = (HERE.parent / "browser").resolve()
PAGE = BROWSER_DIR / "client.html"
BUNDLE = BROWSER_DIR / "node_modules" / "strophe.js" / "dist" / "strophe.umd.min.js"
INSTALL_HINT = "run tests/browser/install.sh (installs Debian's chromium and the npm packages)"

#: Strophe connection statuses after which the page cannot go on.
FATAL_STATUSES = ("CONNFAIL", "AUTHFAIL", "ERROR", "CONNTIMEOUT")

#: How long the browser may take to start, load the page and log in.
LOGIN_WAIT = 30.0
#: How long one message or status may take once logged in.
STEP_WAIT = 15.0


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(f"chromium is not installed: {INSTALL_HINT}", pytrace=False)


def require_bundle() -> None:
    if not PAGE.is_file():
        pytest.fail(f"{PAGE} is missing", pytrace=False)
    if not BUNDLE.is_file():
        pytest.fail(f"Strophe.js is not installed ({BUNDLE} is missing): {INSTALL_HINT}",
                    pytrace=False)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Tern with an extra plain-HTTP listener (WebSocket and BOSH) on `server.http_port`."""
    srv = TernServer(tmp_path_factory.mktemp("browser"), http=True).start()
    yield srv
    srv.stop()


# -- the page's web server and report sink -------------------------------------------------


class _Handler(SimpleHTTPRequestHandler):
    """GET: files under tests/browser. POST /report: one JSON report from the page."""

    def __init__(self, *args, sink: "ReportSink", **kwargs):
        self.sink = sink
        super().__init__(*args, directory=str(BROWSER_DIR), **kwargs)

    def do_POST(self):  # noqa: N802 (http.server's naming)
        if self.path != "/report":
            self.send_error(404)
            return
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        try:
            report = json.loads(raw)
        except ValueError:
            report = {"step": "bad-report", "data": raw.decode("utf-8", "replace")}
        self.sink.deliver(report)
        self.send_response(204)
        self.end_headers()

    def end_headers(self):
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format, *args):  # noqa: A002 (http.server's signature)
        pass


class ReportSink:
    """Threaded HTTP server on 127.0.0.1 for the page: serves it and collects its reports."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.reports: list[dict] = []
        self.queue: asyncio.Queue = asyncio.Queue()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, sink=self))
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="report-sink",
                                       daemon=True)
        self.thread.start()

    def deliver(self, report: dict) -> None:
        """Called on a server thread; hands the report to the test's event loop."""
        self.loop.call_soon_threadsafe(self._add, report)

    def _add(self, report: dict) -> None:
        self.reports.append(report)
        self.queue.put_nowait(report)

    def page_url(self, **params: str) -> str:
        return f"http://127.0.0.1:{self.port}/client.html?{urlencode(params)}"

    @property
    def report_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/report"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)

    def raw(self, direction: str) -> list[str]:
        return [r["data"] for r in sorted(self.reports, key=lambda r: r.get("seq", 0))
                if r.get("step") == "raw" and r.get("dir") == direction]

    def transcript(self, limit: int = 80) -> str:
        """The last reports, in the page's order, for failure messages."""
        lines = []
        for r in sorted(self.reports, key=lambda r: r.get("seq", 0))[-limit:]:
            if r.get("step") == "raw":
                arrow = "<<" if r.get("dir") == "in" else ">>"
                lines.append(f"  {r.get('ms', '?'):>6} ms {arrow} {r.get('data', '')[:1500]}")
            else:
                rest = {k: v for k, v in r.items() if k not in ("run", "seq", "ms", "step")}
                lines.append(f"  {r.get('ms', '?'):>6} ms [{r.get('step')}] {json.dumps(rest)}")
        return "\n".join(lines) if lines else "  (the page reported nothing)"

    async def wait(self, step: str, browser: "Browser", timeout: float,
                   predicate=lambda r: True) -> dict:
        """The first report (already received or coming) of `step` that satisfies `predicate`.

        Fails, with the page's transcript and Chromium's log, when it does not come in time
        or when the page reports an error or its own timeout first.
        """
        for r in self.reports:
            if r.get("step") == step and predicate(r):
                return r

        async def scan():
            while True:
                r = await self.queue.get()
                if r.get("step") == step and predicate(r):
                    return r
                if r.get("step") in ("error", "timeout") or (
                        r.get("step") == "status" and r.get("status") in FATAL_STATUSES):
                    raise AssertionError(f"the page reported {r.get('step')}: {r}")

        self.queue = asyncio.Queue()  # reports seen above are not scanned twice
        try:
            return await asyncio.wait_for(scan(), timeout)
        except asyncio.TimeoutError:
            why = f"no '{step}' report within {timeout}s"
        except AssertionError as exc:
            why = str(exc)
        pytest.fail(f"{why}\npage transcript:\n{self.transcript()}\n"
                    f"chromium log:\n{browser.log_tail()}", pytrace=False)


# -- the browser ------------------------------------------------------------------------------


class Browser:
    """Headless Chromium showing one page, in its own process group and profile."""

    def __init__(self, url: str, workdir: Path):
        self.log_path = workdir / "chromium.log"
        profile = workdir / "chromium-profile"
        profile.mkdir()
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [chromium_path(), "--headless=new", "--no-sandbox", "--disable-gpu",
             f"--user-data-dir={profile}", "--no-first-run", "--no-default-browser-check",
             "--disable-extensions", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
             "--no-proxy-server", "--password-store=basic", "--mute-audio",
             # Console messages, CORS refusals among them, go to the log.
             "--enable-logging=stderr", "--v=0", url],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
            except ProcessLookupError:
                pass
        else:
            # The main process is gone; its helpers may still live in the group.
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._log.close()

    def log_tail(self, max_lines: int = 40) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "(no log)"
        # Chromium complains about the missing D-Bus at length; that is not news.
        lines = [line for line in lines
                 if line.strip() and "dbus" not in line and "unexpected operator" not in line]
        return "\n".join(lines[-max_lines:]) or "(empty)"


# -- the test ---------------------------------------------------------------------------------

ENDPOINTS = {"ws": ("ws", "/ws"), "bosh": ("http", "/http-bind")}


def mechanisms_offered(raw_in: list[str]) -> set[str]:
    names: set[str] = set()
    for data in raw_in:
        for block in re.findall(r"<mechanisms\b.*?</mechanisms>", data, re.S):
            names.update(re.findall(r"<mechanism>\s*([^<\s]+)\s*</mechanism>", block))
    return names


def mechanisms_used(raw_out: list[str]) -> list[str]:
    used = []
    for data in raw_out:
        for tag in re.findall(r"<auth\b[^>]*>", data):
            found = re.search(r"""mechanism=["']([^"']+)["']""", tag)
            if found:
                used.append(found.group(1))
    return used


@pytest.mark.timeout(120)
@pytest.mark.parametrize("transport", ["ws", "bosh"])
async def test_strophe_in_chromium_chats_with_slixmpp(server, clients, tmp_path, transport):
    require_bundle()
    chromium_path()
    web, slix = server.new_account("web"), server.new_account("slix")
    res = server.ctl("roster", "set-mutual-subscription", "--user-a", web.jid,
                     "--user-b", slix.jid)
    assert res.returncode == 0, res.stderr
    peer = clients(slix, resource="slix")
    await peer.online()

    scheme, path = ENDPOINTS[transport]
    service = f"{scheme}://127.0.0.1:{server.http_port}{path}"
    run = f"{transport}-{uuid.uuid4().hex[:8]}"
    to_slix = f"Hello from Strophe over {transport} <&> ✓ {run}"
    to_web = f"Hello back over {transport} from slixmpp <&> ✓ {run}"

    sink = ReportSink(asyncio.get_running_loop())
    browser = Browser(sink.page_url(run=run, transport=transport, service=service,
                                    jid=web.jid, password=web.password, peer=slix.jid,
                                    send=to_slix, expect=to_web, report=sink.report_url),
                      tmp_path)
    try:
        loaded = await sink.wait("loaded", browser, LOGIN_WAIT)
        assert loaded["secure"] and loaded["subtle"], (
            f"the page is not a secure context, so SCRAM cannot run: {loaded}")
        await sink.wait("strophe", browser, STEP_WAIT)

        # Login: SASL (SCRAM, since PLAIN is not offered without TLS), bind, session.
        connected = await sink.wait("connected", browser, LOGIN_WAIT)
        full_jid = connected["jid"]
        bare, _, resource = full_jid.partition("/")
        assert bare == web.jid and resource, f"bound JID {full_jid!r} for {web.jid}"
        offered = mechanisms_offered(sink.raw("in"))
        used = mechanisms_used(sink.raw("out"))
        assert offered, "the page saw no SASL mechanisms offered"
        assert "PLAIN" not in offered, f"PLAIN offered over plain HTTP: {sorted(offered)}"
        assert len(used) == 1 and used[0].startswith("SCRAM-SHA-"), (
            f"SASL mechanisms sent: {used}, offered: {sorted(offered)}")

        # Presence both ways: the browser's initial presence reaches its contact, and the
        # server tells the browser that the contact is online.
        try:
            await peer.wait_presence(
                lambda p: str(p["from"]) == full_jid and p["type"] == "available",
                timeout=STEP_WAIT)
        except asyncio.TimeoutError:
            pytest.fail(f"slixmpp got no available presence from {full_jid}\n"
                        f"page transcript:\n{sink.transcript()}", pytrace=False)
        await sink.wait("presence", browser, STEP_WAIT,
                        lambda r: r.get("from") == str(peer.boundjid) and r.get("type") is None)

        # Browser -> slixmpp.
        sent = await sink.wait("sent", browser, STEP_WAIT)
        assert sent["body"] == to_slix
        try:
            msg = await peer.next_message(timeout=STEP_WAIT)
        except asyncio.TimeoutError:
            pytest.fail(f"slixmpp got no message from the browser within {STEP_WAIT}s\n"
                        f"page transcript:\n{sink.transcript()}", pytrace=False)
        assert msg["body"] == to_slix, msg
        assert msg["type"] == "chat", msg
        assert str(msg["from"]) == full_jid, (msg["from"], full_jid)
        assert msg["id"] == f"browser-{run}", msg

        # slixmpp -> browser, to the full JID bound over this transport.
        peer.send_message(mto=msg["from"], mbody=to_web, mtype="chat")
        got = await sink.wait("message", browser, STEP_WAIT,
                              lambda r: r.get("body") == to_web)
        assert got["from"].partition("/")[0] == slix.jid, got
        assert got["type"] == "chat", got

        # The page then logs out: Strophe sees its session end, and the server ends it too,
        # telling the contact that this resource went offline.
        await sink.wait("status", browser, STEP_WAIT,
                        lambda r: r.get("status") == "DISCONNECTED")
        try:
            await peer.wait_presence(
                lambda p: str(p["from"]) == full_jid and p["type"] == "unavailable",
                timeout=STEP_WAIT)
        except asyncio.TimeoutError:
            pytest.fail(f"slixmpp got no unavailable presence from {full_jid} after the "
                        f"browser logged out\npage transcript:\n{sink.transcript()}",
                        pytrace=False)
        failures = [r for r in sink.reports
                    if r.get("step") == "status" and r.get("status") in FATAL_STATUSES]
        assert not failures, f"connection failures reported: {failures}\n{sink.transcript()}"
        server.assert_alive()
    finally:
        browser.stop()
        sink.close()
        if os.environ.get("TERN_BROWSER_TRANSCRIPT"):
            print(f"\n{transport} page transcript:\n{sink.transcript(limit=400)}")
