"""The aiohttp response types the edge sends, and its plain-text answers."""

from __future__ import annotations

from aiohttp import web


class NoClient(web.StreamResponse):
    """What the proxy's own background request "sends": nobody reads it."""

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


class RelayedResponse(web.StreamResponse):
    """A response that carries only the fields we chose.

    aiohttp fills in Server and Content-Type when absent; a proxy must not
    invent either (RFC 9110 sections 8.3 and 10.2.4: they describe the origin
    and its content), so both are taken out again if we didn't set them.
    """

    body_bytes = 0  # written so far, for the access log

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        await super().write(data)
        self.body_bytes += len(data)

    async def _prepare_headers(self) -> None:
        invented = [name for name in ("Server", "Content-Type") if name not in self._headers]
        await super()._prepare_headers()
        for name in invented:
            self._headers.popall(name, None)


class CoalescedResponse(RelayedResponse):
    """A RelayedResponse whose head is sent with the first body write (or at
    write_eof): one send instead of two for a small body from memory."""

    _send_headers_immediately = False


def text_response(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text, content_type="text/plain")
