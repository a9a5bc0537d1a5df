"""How soon a person sees photos: from opening the sign-in link `clipdex serve` prints to the first thumbnail drawn,
in a real headless Chromium (1280×800), then again on a reload. The first round's thumbnails are made as they are
asked for; later rounds find them in the server's cache.

    python bench/first_photo.py [--rounds 3] [--json]

The library is the 300 sample photos indexed with the sample model, served by the same app `clipdex serve` runs,
in a thread of this process. Each round is a fresh browser page. Figures are medians; the last line of stdout is
one JSON object (--json). Needs Chromium (Debian's `chromium`) and Playwright.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.api_query import serve  # noqa: E402
from clipdex.cli.web import create_app  # noqa: E402
from clipdex.cli.web_security import sign_in_url  # noqa: E402
from clipdex.retrieval import config
from clipdex.retrieval.library import Library  # noqa: E402

TOKEN = "a-bench-token-0123456789"
FIRST_DRAWN = "() => [...document.querySelectorAll('#timeline .thumb img')].some(i => i.complete && i.naturalWidth > 0)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        library = Path(tmp) / "library"
        subprocess.run([sys.executable, "-m", "clipdex", "--library", str(library), "index",
                        str(config.SAMPLE_DATA_DIR / "images"), "--model", "sample"], check=True, capture_output=True)
        port, server = serve(create_app(Library(library), "cpu", token=TOKEN))
        link = sign_in_url(f"http://127.0.0.1:{port}", TOKEN)
        first, reload = [], []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
            for _ in range(args.rounds):
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                started = time.perf_counter()
                page.goto(link, wait_until="commit")
                page.wait_for_function(FIRST_DRAWN, polling=10, timeout=30_000)
                first.append(time.perf_counter() - started)
                started = time.perf_counter()
                page.reload(wait_until="commit")
                page.wait_for_function(FIRST_DRAWN, polling=10, timeout=30_000)
                reload.append(time.perf_counter() - started)
                page.close()
            browser.close()
        server.should_exit = True
    result = {"first_photo_s": round(statistics.median(first), 3), "after_reload_s": round(statistics.median(reload), 3),
              "first_round_s": round(first[0], 3), "rounds": args.rounds}
    print(f"first photo after opening the sign-in link: {result['first_photo_s']:.3f} s (median of {args.rounds}; "
          f"target ≤ 1 s; {result['first_round_s']:.3f} s in the first round, thumbnails made then); "
          f"after a reload: {result['after_reload_s']:.3f} s")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
