"""Who may talk to `clipdex serve`, and how much they may send: two pure ASGI middlewares in front of the app.

A local server is reachable by every web page the user opens: a page on evil.example can POST to
http://127.0.0.1:8765 (cross-site request), or resolve its own name to 127.0.0.1 and then read answers as if they
came from its own origin (DNS rebinding). So:

- `RequestGuard` accepts only Host names that mean this server (loopback, or the name it was started with),
  refuses state-changing requests whose Origin (or Referer) is another site, and asks every request for the
  access token (a bearer header, or the cookie `/login` sets): on loopback too, as Jupyter does, since every
  local user can reach 127.0.0.1 while the library's files are the owner's alone.
- `BodyLimit` refuses a body over the limit as it arrives, before the app reads (or spools) it.

They are pure ASGI (no BaseHTTPMiddleware), so nothing reads the body ahead of them.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import hmac
import ipaddress
import json
import os
import re
import secrets
import socket
import time
from pathlib import Path
from typing import Awaitable, Callable, Iterable, MutableMapping
from urllib.parse import parse_qs, quote, urlsplit

from starlette.requests import cookie_parser

from clipdex.retrieval import config

Scope = MutableMapping[str, object]
Message = MutableMapping[str, object]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOGIN_PATH = "/login"
_HOST = re.compile(r"[a-z0-9._-]{1,253}")  # a DNS name or an IPv4 address
_IPV6 = re.compile(r"[0-9a-f:.]{2,45}")


async def send_error(send: Send, status: int, detail: str, headers: Iterable[tuple[str, str]] = ()) -> None:
    """A JSON error shaped like FastAPI's ({"detail": ...}); the connection is closed after it, since the rest
    of a refused request's body is never read."""
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
           (b"connection", b"close"), *((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers)]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


SIGN_IN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in · clipdex</title><link rel="icon" href="/favicon.ico" type="image/svg+xml">
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:34rem;margin:12vh auto;padding:0 1rem;color:#222}
@media (prefers-color-scheme:dark){body{background:#111;color:#ddd}input{background:#222;color:#ddd}}
input{font:inherit;padding:.4rem;width:100%%;box-sizing:border-box;margin:.3rem 0 .8rem}
button{font:inherit;padding:.4rem 1.2rem}.problem{color:#c33}</style></head>
<body><main><h1>Sign in to clipdex</h1>%s
<p>This photo library asks for its access token. Open the sign-in link that <code>clipdex serve</code> printed
where it was started, or paste the token here:</p>
<form method="get" action="/login">%s<label for="token">Access token</label>
<input id="token" name="token" type="password" autocomplete="off" required autofocus>
<button type="submit">Sign in</button></form>
<p>The token is kept with the library, so a browser signed in stays signed in when the server starts again,
until <code>clipdex serve --new-token</code> makes a new one.</p>
</main></body></html>"""
WRONG_TOKEN = '<p class="problem" role="alert">That token is not this server\'s: check it and try again.</p>'


async def refuse_sign_in(scope: Scope, send: Send, detail: str, wrong: bool = False) -> None:
    """401: a page with a sign-in form for a browser opening a page, the JSON error for everything else."""
    accept = (_header(scope, b"accept") or b"").decode("latin-1")
    if scope["method"] != "GET" or "text/html" not in accept or str(scope["path"]).startswith("/api/"):
        await send_error(send, 401, detail, [("www-authenticate", "Bearer")])
        return
    wanted = safe_next(str(scope["path"]) + ("?" + raw.decode("latin-1") if (raw := scope.get("query_string")) else ""))
    if scope["path"] == LOGIN_PATH:  # a wrong token: the link it came for is still the one the form carried
        wanted = safe_next(parse_qs(scope.get("query_string", b"").decode("latin-1")).get("next", ["/"])[0])
    hidden = f'<input type="hidden" name="next" value="{html.escape(wanted)}">' if wanted != "/" else ""
    body = (SIGN_IN_PAGE % (WRONG_TOKEN if wrong else "", hidden)).encode()
    headers = [(b"content-type", b"text/html; charset=utf-8"), (b"content-length", str(len(body)).encode()),
               (b"cache-control", b"no-store"), (b"www-authenticate", b"Bearer"),
               (b"content-security-policy", b"default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; "
                                            b"form-action 'self'; frame-ancestors 'none'")]
    await send({"type": "http.response.start", "status": 401, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> bytes | None:
    """The value of a header sent exactly once; None when absent. (Sent twice, it is ambiguous: "" for that.)"""
    values = [value for key, value in scope["headers"] if key == name]  # type: ignore[union-attr]
    if len(values) > 1:
        return b""
    return values[0] if values else None


def host_name(netloc: str) -> str | None:
    """The host part of a Host header or URL authority ("example.org:80", "[::1]:8765"), lower case and
    without brackets; None when it is malformed (a name of other characters or longer than DNS allows: never
    repeated back in a refusal)."""
    netloc = netloc.strip().lower()
    if netloc.startswith("["):
        host, bracket, rest = netloc[1:].partition("]")
        if not bracket or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
        return host if _IPV6.fullmatch(host) else None
    host, colon, port = netloc.partition(":")
    if colon and not port.isdigit():
        return None
    return host if _HOST.fullmatch(host) else None


def is_loopback(host: str) -> bool:
    """Whether listening on `host` keeps the server to this machine (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_wildcard(host: str) -> bool:
    """0.0.0.0 or ::: listening on every address, so the names browsers will use are not known from it."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


def names_for(host: str, extra: Iterable[str] = ()) -> set[str]:
    """The Host names to accept for a server listening on `host`: loopback names always, the listening name,
    and, for a wildcard address, this machine's own names and addresses (best effort: more with `extra`)."""
    names = {*config.WEB_LOOPBACK_HOSTS, *(name.lower().strip("[]") for name in extra)}
    if not is_wildcard(host):
        names.add(host.lower().strip("[]"))
        return names
    hostname = socket.gethostname()
    names.update({hostname.lower(), socket.getfqdn().lower(), f"{hostname.lower()}.local"})
    try:
        names.update(info[4][0] for info in socket.getaddrinfo(hostname, None))
    except OSError:
        pass
    return names


def base_url(host: str, port: int) -> str:
    """The address to open in a browser for a server listening on `host`."""
    shown = socket.gethostname() if is_wildcard(host) else host.strip("[]")
    return f"http://[{shown}]:{port}/" if ":" in shown else f"http://{shown}:{port}/"


def new_token() -> str:
    return secrets.token_urlsafe(24)


TOKEN_FILE = "web-token"


def kept_token(folder: Path, rotate: bool = False) -> str:
    """The library's own access token, kept in FOLDER/web-token (0600, only the owner reads it) so a browser
    once signed in stays signed in when `serve` starts again; a new one when there is none or `rotate` (then
    every browser signs in again). A folder this process cannot write gets a token for this run only."""
    path = folder / TOKEN_FILE
    if not rotate:
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))  # (a link put there is no token)
            with os.fdopen(fd, encoding="utf-8") as kept:
                token = kept.read(4096).strip()
            if len(token) >= config.WEB_MIN_TOKEN_CHARS:
                os.chmod(path, 0o600)  # (one made readable by others since is closed again)
                return token
        except OSError:
            pass
    token = new_token()
    tmp = path.with_name(f".{TOKEN_FILE}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(token + "\n")
        os.replace(tmp, path)
    except OSError:
        try:
            tmp.unlink()
        except OSError:
            pass
    return token


def safe_next(target: str) -> str:
    """Where to go after signing in: a path of this server (never another site: no "//host", no scheme, no
    backslash, no control character), else the page itself."""
    if (not target.startswith("/") or target.startswith("//") or "\\" in target
            or target.partition("?")[0] == LOGIN_PATH or len(target) > 4000
            or any(ord(c) < 0x21 or ord(c) == 0x7F for c in target)):
        return "/"
    return target


def sign_in_url(base: str, token: str) -> str:
    """The link that signs a browser in (sets the session cookie) and goes on to the page."""
    return f"{base.rstrip('/')}{LOGIN_PATH}?token={quote(token, safe='')}"


def _session_value(token: str, issued: int) -> str:
    """What the cookie holds: when it was issued and a MAC of that under the token, so the token itself (which
    may hold any character) is never stored in the browser, the value is always cookie-safe, and its age is
    checked here, not left to the browser's expiry."""
    mac = hmac.new(token.encode(), f"clipdex session cookie {issued}".encode(), hashlib.sha256).hexdigest()
    return f"{issued}.{mac}"


def cookie_name(netloc: str) -> str:
    """Cookies are shared by every port of a host: the name carries the port, so a sign-in to one clipdex
    server never replaces another's."""
    try:
        port = urlsplit(f"//{netloc}").port or 80
    except ValueError:
        port = 0
    return f"{config.WEB_TOKEN_COOKIE}_{port}"


def _same(given: str | bytes, expected: str) -> bool:
    """Constant-time comparison (hmac.compare_digest wants bytes for non-ASCII text)."""
    given_bytes = given if isinstance(given, bytes) else given.encode("utf-8", "surrogatepass")
    return hmac.compare_digest(given_bytes, expected.encode())


class RequestGuard:
    """Refuses (before the app sees the request) what a browser could be tricked into sending:

    - a Host header that is not one of `allowed_hosts` (DNS rebinding): 403; none, or a malformed one: 400;
    - with a `token`, any request without it (bearer header or session cookie): 401; `/login?token=…` sets the
      cookie (HttpOnly, SameSite=Strict: never sent by other sites' pages; named for the port; valid for
      WEB_SESSION_SECONDS, checked here) and redirects to the page;
    - a POST/PUT/PATCH/DELETE whose Origin, or Referer when there is no Origin, is not this server: 403.
      Requests with neither (curl, scripts) are let through: only browsers send them, and browsers always do
      on cross-site POSTs.
    """

    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str], token: str | None = None) -> None:
        self.app = app
        self.allowed_hosts = frozenset(name.lower().strip("[]") for name in allowed_hosts)
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host_header = _header(scope, b"host")
        if not host_header:
            await send_error(send, 400, "a single Host header is required")
            return
        netloc = host_header.decode("latin-1")
        name = host_name(netloc)
        if name is None:
            await send_error(send, 400, "malformed Host header")
            return
        if name not in self.allowed_hosts:
            await send_error(send, 403, f"this server does not answer to the host name {name!r}")
            return
        if self.token is not None:
            if scope["path"] == LOGIN_PATH:
                await self._login(scope, send, netloc)
                return
            if not self._signed_in(scope, netloc) and scope["path"] != "/favicon.ico":
                await refuse_sign_in(scope, send, "sign in first: open the link `clipdex serve` printed, or send "
                                     "'Authorization: Bearer TOKEN'")
                return
        if scope["method"] in STATE_CHANGING and not self._same_origin(scope, netloc):
            await send_error(send, 403, "cross-site request refused: it does not come from this server's page")
            return
        await self.app(scope, receive, send)

    def _signed_in(self, scope: Scope, netloc: str) -> bool:
        assert self.token is not None
        authorization = _header(scope, b"authorization") or b""
        scheme, _, credentials = authorization.partition(b" ")
        if scheme.lower() == b"bearer" and _same(credentials.strip(), self.token):
            return True
        cookies = cookie_parser((_header(scope, b"cookie") or b"").decode("latin-1"))
        value = cookies.get(cookie_name(netloc), "")
        issued = value.partition(".")[0]
        if not issued.isdigit() or not 0 <= time.time() - int(issued) <= config.WEB_SESSION_SECONDS:
            return False
        return _same(value, _session_value(self.token, int(issued)))

    async def _login(self, scope: Scope, send: Send, netloc: str) -> None:
        assert self.token is not None
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))  # type: ignore[union-attr]
        given = query.get("token", [""])[0]
        if not _same(given, self.token):  # parse_qs undid the link's UTF-8 percent-encoding
            await refuse_sign_in(scope, send, "wrong or missing token in the sign-in link", wrong=bool(given))
            return
        value = _session_value(self.token, int(time.time()))
        cookie = (f"{cookie_name(netloc)}={value}; HttpOnly; SameSite=Strict; Path=/; "
                  f"Max-Age={config.WEB_SESSION_SECONDS}")
        target = safe_next(query.get("next", ["/"])[0]).encode("utf-8")  # the link that asked for a sign-in
        location = quote(target, safe="/?&=%:;,+@!$'()*~.-_").encode()
        headers = [(b"location", location), (b"set-cookie", cookie.encode()), (b"content-length", b"0"),
                   (b"cache-control", b"no-store"), (b"referrer-policy", b"no-referrer")]
        await send({"type": "http.response.start", "status": 303, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    @staticmethod
    def _same_origin(scope: Scope, netloc: str) -> bool:
        """Whether a browser says the request comes from a page of this server (host and port as in Host)."""
        origin = _header(scope, b"origin")
        if origin is None:
            origin = _header(scope, b"referer")
            if origin is None:
                return True  # not sent by a browser page
        try:
            source = urlsplit(origin.decode("latin-1")).netloc
        except ValueError:
            return False
        return bool(source) and source.lower() == netloc.strip().lower()  # "null" and garbage have no netloc


class _BodyRefused(Exception):
    def __init__(self, status: int, detail: str) -> None:
        self.status, self.detail = status, detail


class BodyLimit:
    """Refuses a request body over `limit` bytes with 413 before the app stores it: at once when the declared
    Content-Length is over, else (chunked bodies) as soon as the bytes received pass the limit; and one that
    has not all arrived `seconds` after the app asked for it with 408 (half-sent bodies would otherwise hold a
    connection and a worker for as long as the client likes). The rest is never read: the connection is closed
    after the refusal."""

    def __init__(self, app: ASGIApp, limit: int, seconds: float = config.WEB_BODY_SECONDS) -> None:
        self.app = app
        self.limit = limit
        self.seconds = seconds

    def _refusal(self) -> str:
        return f"request body larger than {self.limit / (1024 * 1024):g} MB"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await send_error(send, 400, "malformed Content-Length header")
                return
            if int(declared) > self.limit:
                await send_error(send, 413, self._refusal())
                return
        received = 0
        refused: _BodyRefused | None = None
        started = False
        deadline: float | None = None
        loop = asyncio.get_running_loop()

        async def counted_receive() -> Message:
            nonlocal received, refused, deadline
            deadline = deadline or loop.time() + self.seconds
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.001))
            except asyncio.TimeoutError:
                refused = _BodyRefused(408, f"request body not received within {self.seconds:g} s")
                raise refused from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))  # type: ignore[arg-type]
                if received > self.limit:
                    refused = _BodyRefused(413, self._refusal())
                    raise refused
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the app's answer to a body cut short (FastAPI makes it a 400) gives way to the refusal
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not refused:
                raise
        if refused and not started:
            await send_error(send, refused.status, refused.detail)
