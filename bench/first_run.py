"""What a first run costs beyond the download itself: the default model folder fetched from a hub on loopback (its
real file sizes, random bytes) by clipdex, against the same bytes fetched by plain HTTP GETs in the same process.

    python bench/first_run.py [--json]

clipdex's fetch is huggingface_hub's (repository listing, a HEAD and a GET per file, the move into its cache) plus
clipdex's own checks (each file's sha256 against the hub's listing) and its record of a whole folder; the plain
GETs write each file to disk and nothing else. Also: finding the fetched folder again in the cache (what every
later command does). The last line of stdout is one JSON object (with --json).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

WORK = Path(tempfile.mkdtemp(prefix="clipdex-first-run-"))
os.environ["HF_HUB_CACHE"] = str(WORK / "hf")  # before huggingface_hub reads it
os.environ["CLIPDEX_CACHE"] = str(WORK / "clipdex-cache")
os.environ.pop("HF_HUB_OFFLINE", None)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from clipdex.retrieval import config  # noqa: E402
from clipdex.retrieval.models import catalogue  # noqa: E402
from tests.hub_server import Hub, Repo  # noqa: E402  (the tests' loopback hub)

# The default folder's two towers as the hub lists them (the rest is the sample's small files)
SIZES = {"visual/model.onnx": 351_613_724, "textual/model.onnx": 254_193_396}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    entry = catalogue.default_entry()
    rng = __import__("numpy").random.default_rng(0)
    files = {p.relative_to(config.SAMPLE_MODEL_FOLDER).as_posix(): p.read_bytes()
             for p in config.SAMPLE_MODEL_FOLDER.rglob("*") if p.is_file()}
    files.update({path: rng.bytes(size) for path, size in SIZES.items()})
    total = sum(len(data) for data in files.values())
    try:
        with Hub() as hub:
            hub.repos[entry.hub_id] = Repo(files, entry.revision)
            os.environ["HF_ENDPOINT"] = hub.url
            started = time.perf_counter()
            raw = WORK / "raw"
            raw.mkdir()
            for n, path in enumerate(files):
                with urllib.request.urlopen(f"{hub.url}/{entry.hub_id}/resolve/{entry.revision}/{path}") as answer, \
                        open(raw / str(n), "wb") as out:
                    shutil.copyfileobj(answer, out, 1 << 20)
            plain = time.perf_counter() - started
            shutil.rmtree(raw)

            from clipdex.retrieval.models.hub import cached_folder
            from clipdex.retrieval.models.hub_download import hub_folder

            started = time.perf_counter()
            hub_folder(entry.hub_id, entry.revision, None, entry.label())
            fetched = time.perf_counter() - started
            started = time.perf_counter()
            for _ in range(5):
                assert cached_folder(entry.hub_id, entry.revision) is not None
            found = (time.perf_counter() - started) / 5
        started = time.perf_counter()
        for data in files.values():
            hashlib.sha256(data).hexdigest()
        hashing = time.perf_counter() - started
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
    summary = {"bytes": total, "plain_get_s": round(plain, 2), "clipdex_fetch_s": round(fetched, 2),
               "overhead_s": round(fetched - plain, 2), "ratio": round(fetched / plain, 2),
               "sha256_of_all_s": round(hashing, 2), "found_in_cache_ms": round(1000 * found, 2),
               "machine": f"{os.cpu_count()} cores"}
    if not args.json:
        print(f"{total / 1e6:.0f} MB: plain GETs {plain:.2f} s, clipdex's fetch {fetched:.2f} s "
              f"(+{fetched - plain:.2f} s, ×{fetched / plain:.2f}; sha256 of every byte {hashing:.2f} s); "
              f"found in the cache again in {1000 * found:.1f} ms")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
