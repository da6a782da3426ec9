"""Process lifecycle: a fresh data directory is initialised on first start,
and SIGTERM stops the node promptly while clients are connected."""

from __future__ import annotations

import asyncio

from xmppclient import ClientFactory


async def test_sigterm_closes_sessions_and_exits(fresh_server):
    factory = ClientFactory(fresh_server)
    try:
        account = fresh_server.new_account("bye")
        client = factory(account, resource="r")
        await client.online()

        fresh_server.terminate()
        reason = await asyncio.wait_for(asyncio.shield(client.gone), 10)
        loop = asyncio.get_running_loop()
        code = await loop.run_in_executor(None, fresh_server.proc.wait, 10)
        assert code == 0, f"tern exited with {code} on SIGTERM"
        # If the server says why it closes the stream, it is system-shutdown
        # (RFC 6120 §4.9.3.22).
        conditions = [e["condition"] for e in client.stream_errors]
        assert set(conditions) <= {"system-shutdown"}, (conditions, reason)
    finally:
        await factory.close_all()


def test_fresh_data_dir_is_initialised(fresh_server):
    data = fresh_server.data_dir
    assert (data / "tls" / "cert.pem").is_file()
    assert (data / "admin.token").is_file()
    token = (data / "admin.token").read_text().strip()
    assert len(token) >= 16, "admin token shorter than the config minimum"
