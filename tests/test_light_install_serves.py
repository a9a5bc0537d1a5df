"""`clipdex serve` on the light install (torch cannot be imported): every GET route of its OpenAPI schema and every
file the page itself loads answers without a server error, and the server's log holds no traceback."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import SAMPLE, without_torch, without_torch_command, without_torch_env


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=60) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read()


@pytest.mark.slow
def test_every_get_route_answers_without_torch(tmp_path: Path, photos) -> None:
    library = tmp_path / "library"
    pictures = photos(3)
    assert without_torch("-L", library, "index", pictures, *SAMPLE).returncode == 0
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(without_torch_command("-L", library, "serve", "--port", port, "--no-token"),
                              env=without_torch_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(server.stdout), daemon=True)
    reader.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                status, schema = _get(base + "/openapi.json")
                break
            except OSError:
                assert server.poll() is None, "".join(lines)
                time.sleep(0.2)
        assert status == 200
        paths = json.loads(schema)["paths"]
        answers = {}
        for route, methods in paths.items():
            if "get" not in methods:
                continue
            url = re.sub(r"\{[^}]+\}", "1", route)  # item 1 exists; a path id that does not is a 404, not a 500
            answers[url] = _get(base + url)[0]
        page_status, page = _get(base + "/")
        assert page_status == 200
        for asset in set(re.findall(r'(?:src|href)="(/[^"]+)"', page.decode())):
            answers[asset] = _get(base + asset)[0]
    finally:
        server.terminate()
        server.wait(timeout=60)
        reader.join(timeout=10)
    log = "".join(lines)
    assert "/api/reports" in answers and len(answers) > 10, answers
    assert all(code < 500 for code in answers.values()), answers
    assert "Traceback" not in log and "ModuleNotFoundError" not in log, log[-3000:]
