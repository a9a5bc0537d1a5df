"""`clipdex serve`: an HTTP JSON API and a small page over one library, with the model and index kept warm.

The routes live by concern: queries in web_search.py, the library's timeline, details and sidecars in
web_library.py, files in web_files.py; each reads its request and calls `clipdex.api`. Files are served only by
item id, for items in the library; nothing in a request is used as a path to read, and a file is sent only while
it is still the one that was indexed (the one path a request names is the absolute folder `POST /api/move` moves
chosen files into, never replacing a file there). Uploads are never decoded past what their header declares allowed, nor more
than a few at a time; request bodies are bounded as they arrive, and only loopback (or token-holding) clients on
this server's own page get answers (web_security.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

from clipdex.cli import web_files, web_library, web_search
from clipdex.cli.web_security import BodyLimit, RequestGuard
from clipdex.cli.web_served import Served
from clipdex.retrieval import config
from clipdex.retrieval.errors import ClipdexError
from clipdex.retrieval.library import Library

MAX_UPLOAD_BYTES = config.WEB_MAX_BODY_BYTES
STATIC = Path(__file__).with_name("static")


def create_app(
    library: Library,
    device: str = "auto",
    precision: str = "fp32",
    *,
    allowed_hosts: Iterable[str] = (),
    token: str | None = None,
    max_upload_pixels: int = config.WEB_MAX_UPLOAD_PIXELS,
    max_body_bytes: int = config.WEB_MAX_BODY_BYTES,
    body_seconds: float = config.WEB_BODY_SECONDS,
) -> FastAPI:
    """The app for one library.

    allowed_hosts: Host names to answer besides the loopback ones (e.g. the name given to `serve --host`).
    token: when set, every request must carry it (bearer header, or the cookie `/login?token=…` sets).
    max_upload_pixels: uploads declaring more pixels are refused from their header (413).
    max_body_bytes: larger request bodies are refused as they arrive (413).
    body_seconds: a body still incomplete this long after the app asked for it is refused (408)."""
    if token is not None and len(token) < config.WEB_MIN_TOKEN_CHARS:
        raise ClipdexError(f"the access token must be at least {config.WEB_MIN_TOKEN_CHARS} characters long")
    app = FastAPI(title="clipdex", description="Search a photo library by sentence or by image.")
    app.state.served = Served(library, device, precision, max_upload_pixels)
    app.add_middleware(BodyLimit, limit=max_body_bytes, seconds=body_seconds)
    app.add_middleware(RequestGuard, allowed_hosts={*config.WEB_LOOPBACK_HOSTS, *allowed_hosts}, token=token)

    @app.exception_handler(RequestValidationError)
    def invalid_request(_request, exc: RequestValidationError) -> JSONResponse:
        """What was wrong with a request, without echoing its values (NaN or 1e400 in a body are no JSON)."""
        return JSONResponse({"detail": [{key: error[key] for key in ("type", "loc", "msg") if key in error}
                                        for error in exc.errors()]}, status_code=422)

    @app.exception_handler(ClipdexError)
    def clipdex_error(_request, exc: ClipdexError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.http_status)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return (STATIC / "index.html").read_text(encoding="utf-8")

    app.get("/favicon.ico", include_in_schema=False)(lambda: FileResponse(STATIC / "favicon.svg",
                                                                          media_type="image/svg+xml"))
    for routes in (web_search.router, web_library.router, web_files.router):
        app.include_router(routes)
    return app
