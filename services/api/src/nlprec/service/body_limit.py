"""Reject request bodies larger than `limits.max_body_bytes` with a 413 problem.

A declared `Content-Length` over the limit is refused before the body is read; a chunked body is
counted as it arrives and refused as soon as it passes the limit.
"""

from __future__ import annotations

from nlprec.service.problems import problem_response
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(HTTPException):
    # An HTTPException so FastAPI's body parsing re-raises it unchanged (it would turn any other
    # exception into a 400) and the problem handler answers 413.
    slug = "content-too-large"

    def __init__(self, limit: int):
        super().__init__(
            413, f"request body larger than the limit of {limit} bytes (limits.max_body_bytes)"
        )


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int):
        self.app, self.max_body_bytes = app, max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            error = BodyTooLarge(self.max_body_bytes)
            response = problem_response(413, "content-too-large", error.detail, scope["path"])
            await response(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLarge(self.max_body_bytes)
            return message

        await self.app(scope, counting_receive, send)
