"""A request body that stops arriving is answered 408 instead of holding the request open.

uvicorn's ``timeout_keep_alive`` covers idle connections between requests, not a client that
sends headers and part of a body and then stalls. This pure ASGI middleware times each wait for
the next body chunk; past ``timeout_s`` of silence it raises a 408 ``HTTPException`` (with
``Connection: close``: the rest of that body will never be read). An ``HTTPException`` is what
FastAPI's own body parsing lets through unchanged, so the same answer comes from every route,
whether it reads the body itself or lets FastAPI parse it.

Only the body is timed: once its last chunk has arrived, later ``receive`` calls (a streaming
response listening for the client to disconnect) wait as long as they need.
"""

from __future__ import annotations

import asyncio

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyReadTimeoutMiddleware:
    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_done = False

        async def timed_receive() -> Message:
            nonlocal body_done
            if body_done:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.timeout_s)
            except TimeoutError:
                raise HTTPException(
                    408,
                    f"the request body stalled: no bytes for {self.timeout_s:g} s",
                    headers={"Connection": "close"},
                ) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        await self.app(scope, timed_receive, send)
