"""A deadline for a request's headers: uvicorn's HTTP protocols with a timer uvicorn does not have.

uvicorn times a connection only between requests (``timeout_keep_alive``, from the end of a response)
and never while headers arrive: a client that opens a connection and sends its headers a byte at a time,
or not at all, holds the connection (and a file descriptor) for as long as it likes, and the app, which
sees a request only once its headers are complete, cannot cut it off. ``--body-timeout`` covers the body;
this covers the headers, with the same number of seconds: from the connection (or the end of the previous
response on a kept-alive one) to the end of the headers. A late client's connection is closed.
"""

from __future__ import annotations

import asyncio


def header_deadline_protocol(seconds: float, base: type | None = None) -> type:
    """``base`` (default: the protocol uvicorn's ``http="auto"`` picks: httptools, else h11) closing a
    connection whose request headers are not complete ``seconds`` after it opened or after the previous
    response. Pass it as ``uvicorn.Config(http=...)``."""
    if base is None:
        from uvicorn.protocols.http.auto import AutoHTTPProtocol

        base = AutoHTTPProtocol

    class HeaderDeadline(base):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()  # the next request's headers are due in as long

        def _arm(self) -> None:
            self._disarm()
            if not self.transport.is_closing():
                self._header_timer = self.loop.call_later(seconds, self._headers_late)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_late(self) -> None:
            self._header_timer = None
            if self.cycle is None or self.cycle.response_complete:  # no request being served
                self.transport.close()

        # where each implementation learns that a request's headers are complete
        def on_headers_complete(self) -> None:  # httptools
            self._disarm()
            super().on_headers_complete()

        def handle_events(self) -> None:  # h11
            super().handle_events()
            import h11

            if self.conn.their_state is not h11.IDLE:
                self._disarm()

    for name in ("on_headers_complete", "handle_events"):  # only the hook the base implementation has
        if not hasattr(base, name):
            delattr(HeaderDeadline, name)
    HeaderDeadline.__name__ = HeaderDeadline.__qualname__ = f"HeaderDeadline{base.__name__}"
    return HeaderDeadline
