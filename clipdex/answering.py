"""A running `watch` or `serve` answers the CLI's queries (search, captions, duplicates) on an owner-only unix socket
in the library folder, so a query in a new process needs neither the model nor the index loaded (the client is
`asking.py`). The server keeps the text tower and index for `keep_alive` seconds after a query, then drops them,
so an idle `watch` stays small.

Requests are one JSON line; while a query runs the server writes an empty line every beat, then the answer line
with the library it answers for. A request for another library, another protocol or settings this server does
not hold, or one that fails, is answered without a result: the client then answers it in its own process."""

from __future__ import annotations

import json
import os
import socket
import socketserver
import threading
import time

from clipdex import api
from clipdex.asking import PROTOCOL, library_key, ours, peer, socket_address
from clipdex.live import return_freed_memory
from clipdex.retrieval import config
from clipdex.retrieval.errors import first_line
from clipdex.retrieval.search.hits import Filters
from clipdex.retrieval.library import Library
from clipdex.retrieval.search.terms import Term


class QueryServer:
    """Answers queries over `library` with the model settings a command would use by default, one at a time
    (`lock`, shared with whatever else queries the same Library object)."""

    def __init__(self, library: Library, device: str = "auto", precision: str = "fp32",
                 lock: threading.Lock | None = None, keep_alive: float | None = None) -> None:
        self.library, self.device, self.precision = library, device, precision
        self.lock = lock or threading.Lock()
        self.keep_alive = keep_alive  # None: the model stays loaded
        self.key = library_key(library.root)
        self.path = os.path.join(library.root, config.SOCKET_FILE)
        self._server: socketserver.ThreadingUnixStreamServer | None = None
        self._inode: int | None = None
        self._closed = threading.Event()
        self._used: float | None = None  # when the last query ended, while the model is held for the next

    def start(self) -> str | None:
        """Listen; None once listening, else why not (the caller says it: the CLI still answers for itself)."""
        try:
            with socket_address(self.library.root) as address:
                if os.path.lexists(self.path):
                    if not ours(self.path):
                        return f"{self.path} is not this user's socket: queries run in their own processes"
                    if _answers(address):
                        return "another clipdex process answers this library's queries"
                    os.unlink(self.path)  # a stale socket, left by a process that was killed
                server = _Server(address, _Handler)
            os.chmod(self.path, 0o600)  # the folder is 0700 already, and every peer's user is checked
            self._inode = os.lstat(self.path).st_ino
        except OSError as exc:
            return f"cannot listen on {self.path}: {exc.strerror or exc}; queries run in their own processes"
        server.owner = self
        self._server = server
        threading.Thread(target=server.serve_forever, args=(0.2,), name="clipdex-answer", daemon=True).start()
        if self.keep_alive is not None:
            threading.Thread(target=self._drop_when_idle, name="clipdex-keep-alive", daemon=True).start()
        return None

    def close(self) -> None:
        self._closed.set()
        if self._server is None:
            return
        self._server.shutdown()
        try:  # still bound, so its inode cannot have been reused: a different one is a newer server's, left alone
            if os.lstat(self.path).st_ino == self._inode:
                os.unlink(self.path)
        except OSError:
            pass
        self._server.server_close()

    def answer(self, op: str, arguments: dict) -> object:
        """The result of one request, as JSON-ready data; raises what the query raises."""
        wanted = (arguments.get("device", self.device), arguments.get("precision", self.precision))
        if wanted != (self.device, self.precision):
            raise LookupError("asked for other model settings than this server's")
        with self.lock:
            try:
                if op == "search":
                    terms = [Term(str(value), bool(is_image), float(weight))
                             for value, is_image, weight in arguments["terms"]]
                    filters = Filters(**arguments["filters"])
                    return api.search(self.library, terms, int(arguments["k"]), filters, self.device, self.precision,
                                      str(arguments["mode"]), str(arguments["sort"]),
                                      literal=bool(arguments.get("literal", False))).to_wire()
                if op == "captions":
                    return api.captions(self.library, str(arguments["image"]), int(arguments["k"]), self.device,
                                        str(arguments["source"])).to_wire()
                if op == "duplicates":
                    return api.duplicates(self.library, float(arguments["threshold"]))
                raise LookupError(f"no such query: {op}")
            finally:
                self._used = time.monotonic()

    def _drop_when_idle(self) -> None:
        tick = max(0.05, min(self.keep_alive / 4, 5.0))
        while not self._closed.wait(tick):
            with self.lock:
                if self._used is not None and time.monotonic() - self._used >= self.keep_alive:
                    self.library.forget_model()
                    return_freed_memory()
                    self._used = None


def _answers(address: str) -> bool:
    """Whether a server listens at `address` (a refused connection means a stale file)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(config.SOCKET_CONNECT_SECONDS)
        try:
            probe.connect(address)
        except OSError:
            return False
    return True


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    block_on_close = False
    owner: QueryServer

    def handle_error(self, request, client_address) -> None:
        """A client that went away, or sent nothing in time: nothing to report."""


class _Handler(socketserver.StreamRequestHandler):
    timeout = config.SOCKET_SILENCE_SECONDS  # for the request line to arrive

    def handle(self) -> None:
        owner: QueryServer = self.server.owner
        other = peer(self.request)
        if other is not None and other[1] != os.getuid():
            return
        try:
            request = json.loads(self.rfile.readline(config.SOCKET_MAX_REQUEST_BYTES))
            op, arguments = str(request["op"]), dict(request["arguments"])
            fits = request["protocol"] == PROTOCOL and request["library"] == owner.key
        except (ValueError, TypeError, KeyError):
            return
        reply: dict = {"library": owner.key}
        if fits:
            done = threading.Event()

            def work() -> None:
                try:
                    reply["result"] = owner.answer(op, arguments)
                except Exception as exc:  # the client answers it itself, and says what is wrong as it would
                    reply["unanswered"] = first_line(exc)
                finally:
                    done.set()

            threading.Thread(target=work, name="clipdex-query", daemon=True).start()
            while not done.wait(config.SOCKET_BEAT_SECONDS):
                self.wfile.write(b"\n")
                self.wfile.flush()
        self.wfile.write(json.dumps(reply).encode() + b"\n")
