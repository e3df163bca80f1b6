"""GET /api/sessions/{id}: a live session's state, and for a while after its end the reason (410)."""
from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from server_harness import Server, run

from enliven.server.client import LoopbackClient, noise_frames

pytestmark = pytest.mark.slow  # it shares the server process of the loopback tests


def test_status_says_the_state_then_why_it_ended(server: Server) -> None:
    server.wait_idle()

    async def go() -> list[tuple[int, dict[str, Any]]]:
        client = LoopbackClient(server.url, noise_frames())
        seen = []
        async with aiohttp.ClientSession() as http:
            async def status(token: str | None) -> None:
                headers = {} if token is None else {"Authorization": f"Bearer {token}"}
                async with http.get(f"{server.base}/api/sessions/{client.session_id}", headers=headers) as r:
                    seen.append((r.status, await r.json()))

            await client.create()
            await status(client.token)
            await status("x" * 43)
            assert await client.delete() == 204
            await status(client.token)
            await status("x" * 43)
            await status(None)
        await client.close()
        return seen

    live, wrong, ended, wrong_after, missing = run(go())
    assert live == (200, {"session_id": live[1]["session_id"], "state": "created"})
    assert wrong[0] == 403 and wrong_after[0] == 403, "another token learns nothing, before or after the end"
    assert ended[0] == 410 and ended[1]["state"] == "ended" and ended[1]["reason"] == "deleted by the user"
    assert missing[0] == 401
