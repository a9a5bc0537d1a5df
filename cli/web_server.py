"""Running the web app: uvicorn, with a deadline on every request head and a budget of open files, so clients
that send slowly (or never finish) cannot stop `clipdex serve` answering anyone, token or not.

uvicorn times out idle keep-alive connections, but not a request head that stops half-way: each such
connection held a file descriptor for ever, and at the open-file limit the server accepted no one.
"""

from __future__ import annotations

import resource

from clipdex.retrieval import config


def _timely_heads_protocol():
    """uvicorn's HTTP/1.1 protocol, closing a connection whose request head is not all there
    WEB_HEAD_SECONDS after its first byte (or after the connection opened)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class TimelyHeads(H11Protocol):
        _head_deadline = None

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._start_head_deadline()

        def data_received(self, data: bytes) -> None:
            if self._between_requests():
                self._start_head_deadline()  # a new head is arriving
            super().data_received(data)
            if not self._between_requests():
                self._stop_head_deadline()  # the head is complete: the body has its own deadline

        def connection_lost(self, exc) -> None:
            self._stop_head_deadline()
            super().connection_lost(exc)

        def _between_requests(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _start_head_deadline(self) -> None:
            if self._head_deadline is None:
                self._head_deadline = self.loop.call_later(config.WEB_HEAD_SECONDS, self._head_too_slow)

        def _stop_head_deadline(self) -> None:
            if self._head_deadline is not None:
                self._head_deadline.cancel()
                self._head_deadline = None

        def _head_too_slow(self) -> None:
            self._head_deadline = None
            if self._between_requests() and not self.transport.is_closing():
                self.transport.close()

    return TimelyHeads


def file_budget() -> int:
    """Raise this process's soft limit on open files to its hard limit (the server's process, not a library
    import, does this); how many connections to serve at once, leaving room for the library's own files."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        wanted = config.WEB_MAX_OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, config.WEB_MAX_OPEN_FILES)
        if wanted > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
    return max(16, soft - config.WEB_RESERVED_FILES)


def run(app, host: str, port: int) -> None:
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning", http=_timely_heads_protocol(),
                limit_concurrency=file_budget())
