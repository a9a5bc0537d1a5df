"""A small Hugging Face hub on loopback that the real huggingface_hub client talks to through HF_ENDPOINT: enough
of the protocol to list and fetch model folders (repository info, the tree, `resolve/` with ETag, X-Repo-Commit,
X-Linked-Size and byte ranges). Tests serve folders made from the sample model under any hub id, slowly when a
download must be caught half-way, or with one file served wrong."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".onnx", ".data", ".bin")


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


@dataclass
class Repo:
    files: dict[str, bytes]
    commit: str = "0123456789abcdef0123456789abcdef01234567"
    corrupt: set[str] = field(default_factory=set)  # served with other bytes than the tree declares
    token: str | None = None  # a private repository: answered only with `Authorization: Bearer TOKEN`

    def entry(self, path: str) -> dict:
        data = self.files[path]
        found = {"type": "file", "path": path, "size": len(data), "oid": git_blob_id(data)}
        if path.endswith(LFS_SUFFIXES):
            found["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return found


def folder_repo(folder: Path, commit: str | None = None) -> Repo:
    """A repository holding every file of a model folder (the sample model's, or one a test made)."""
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    return Repo(files, commit or hashlib.sha1(b"".join(files.values())).hexdigest())


class Hub:
    """The server: `repos` by hub id; `bytes_per_second` throttles file bodies; `requests` counts what was asked."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.bytes_per_second: float | None = None
        self.requests: list[str] = []
        self.api_answers: str = "hub"  # "hub"; "silence": a connection accepted, no answer; "garbage": not JSON
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_HEAD(self) -> None:
                hub.answer(self, body=False)

            def do_GET(self) -> None:
                hub.answer(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False  # (a handler kept silent on purpose is not waited for)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Hub":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, request: BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(urlsplit(request.path).path)
        self.requests.append(f"{request.command} {path}")
        info = re.fullmatch(r"/api/models/([^/]+/[^/]+)/revision/([^/]+)", path)
        tree = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?", path)
        resolve = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        named = next((m.group(1) for m in (info, tree, resolve) if m), None)
        if named in self.repos and self.repos[named].token is not None:
            if request.headers.get("Authorization") != f"Bearer {self.repos[named].token}":
                return self.send_json(request, {"error": "Invalid credentials"}, body, status=401)
        if (info or tree) and self.api_answers == "silence":
            time.sleep(60)
            return
        if (info or tree) and self.api_answers == "garbage":
            request.send_response(200)
            request.send_header("Content-Length", "9")
            request.end_headers()
            request.wfile.write(b"<html>hi!" if body else b"")
            return
        if info and info.group(1) in self.repos:
            repo = self.repos[info.group(1)]
            siblings = [{"rfilename": name} for name in repo.files]
            return self.send_json(request, {"id": info.group(1), "modelId": info.group(1), "sha": repo.commit,
                                            "siblings": siblings, "private": False}, body)
        if tree and tree.group(1) in self.repos and tree.group(2) in ("main", self.repos[tree.group(1)].commit):
            repo = self.repos[tree.group(1)]
            return self.send_json(request, [repo.entry(name) for name in sorted(repo.files)], body)
        if resolve and resolve.group(1) in self.repos:
            repo = self.repos[resolve.group(1)]
            name = resolve.group(3)
            if resolve.group(2) in ("main", repo.commit) and name in repo.files:
                return self.send_file(request, repo, name, body)
        self.send_json(request, {"error": "Repository not found"}, body, status=404)

    def send_json(self, request, value, body: bool, status: int = 200) -> None:
        data = json.dumps(value).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        if body:
            request.wfile.write(data)

    def send_file(self, request, repo: Repo, name: str, body: bool) -> None:
        data = repo.files[name]
        entry = repo.entry(name)
        etag = entry["lfs"]["oid"] if "lfs" in entry else entry["oid"]
        if name in repo.corrupt:
            data = bytes(len(data) - 1) + b"!"  # the declared size, other bytes
        start = 0
        wanted = re.fullmatch(r"bytes=(\d+)-(\d*)", request.headers.get("Range", ""))
        if wanted and body:
            start = int(wanted.group(1))
        part = data[start:]
        request.send_response(206 if start else 200)
        request.send_header("X-Repo-Commit", repo.commit)
        request.send_header("ETag", f'"{etag}"')
        if "lfs" in entry:
            request.send_header("X-Linked-Etag", f'"{etag}"')
            request.send_header("X-Linked-Size", str(len(data)))
        request.send_header("Accept-Ranges", "bytes")
        request.send_header("Content-Length", str(len(part) if body else len(data)))
        if start:
            request.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        request.end_headers()
        if not body:
            return
        step = 64 * 1024
        try:
            for offset in range(0, len(part), step):
                request.wfile.write(part[offset : offset + step])
                if self.bytes_per_second:
                    time.sleep(step / self.bytes_per_second)
        except (BrokenPipeError, ConnectionResetError):
            pass
