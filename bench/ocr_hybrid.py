"""OCR cost per photo with and without text, against CLIP's embedding cost, and hybrid query latency against a
CLIP-only query, side by side in one process.

    python bench/ocr_hybrid.py [--photos 8] [--images 100000] [--queries 30] [--json]

Photos are camera-size (4000×3000) JPEGs: sample photos scaled up with grain (no text), and the same with lines
of words drawn on them. CLIP cost = ViT-B-32 (random weights, fp32) encoder time per image plus the index
pipeline's own read + decode + preprocess of the same file. Added cost of `index --ocr` for a photo without text = the gate (a small text detection, one
thread) on the image the pipeline already decoded; OCR read = TextReader.read from the file (`index --ocr` on
an existing library, and every photo the gate passes).
The hybrid library holds synthetic unit vectors under a real ViT-B-32 binding with an exported text tower; 10% of
its items carry recognised text.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.synthetic import fill_library  # noqa: E402
from clipdex import api  # noqa: E402
from clipdex.retrieval import config
from clipdex.retrieval.models.openclip.factory import load_encoder  # noqa: E402
from clipdex.retrieval.media.images import open_image, read_image  # noqa: E402
from clipdex.retrieval.library import Library  # noqa: E402
from clipdex.retrieval.media.ocr import TextReader  # noqa: E402

WORDS = "invoice total receipt gate boarding platform exit menu price coffee parking ticket vpn settings".split()


def camera_photos(folder: Path, n: int, with_text: bool) -> list[Path]:
    rng = np.random.default_rng(1 if with_text else 0)
    samples = sorted(config.SAMPLE_DATA_DIR.glob("images/*"))
    paths = []
    for i in range(n):
        base = Image.open(samples[i]).convert("RGB").resize((4000, 3000), Image.Resampling.BICUBIC)
        grain = rng.integers(-12, 12, (3000, 4000, 3), dtype=np.int16)
        image = Image.fromarray(np.clip(np.asarray(base, dtype=np.int16) + grain, 0, 255).astype(np.uint8))
        if with_text:
            draw = ImageDraw.Draw(image)
            font = ImageFont.load_default(size=150)
            for line in range(4):
                words = " ".join(rng.choice(WORDS, 2)) + f" {rng.integers(100, 9999)}"
                draw.rectangle((300, 500 + line * 450, 3600, 800 + line * 450), fill=(250, 250, 245))
                draw.text((400, 550 + line * 450), words.upper(), fill=(15, 15, 15), font=font)
        path = folder / f"{'text' if with_text else 'plain'}-{i}.jpg"
        image.save(path, quality=90)
        paths.append(path)
    return paths


def per_image(function, items) -> float:
    started = time.perf_counter()
    for item in items:
        function(item)
    return (time.perf_counter() - started) / len(items)


def ocr_figures(folder: Path, n: int) -> dict:
    plain, text = camera_photos(folder, n, False), camera_photos(folder, n, True)
    encoder = load_encoder("ViT-B-32", None, "cpu")
    reader = TextReader()
    reader.read(plain[0])  # loads the models
    decode = per_image(lambda p: encoder.preprocess(open_image(p, encoder.image_size)), plain)
    batch = [open_image(p, encoder.image_size) for p in plain]
    encoder.encode_images(batch)  # warm up
    started = time.perf_counter()
    encoder.encode_images(batch)
    embed = (time.perf_counter() - started) / len(batch)
    gate = TextReader(threads=1)  # as a decode worker runs it, on the image it decoded for the model
    drafts = [read_image(p, max(encoder.image_size, config.OCR_GATE_SIDE)).image for p in plain]
    gate.has_text(drafts[0])
    gate_s = per_image(gate.has_text, drafts)
    no_text = per_image(reader.read, plain)
    with_text = per_image(reader.read, text)
    found = sum(bool(reader.read(p)) for p in text)
    return {
        "clip_s": round(decode + embed, 4), "clip_encoder_s": round(embed, 4), "clip_decode_s": round(decode, 4),
        "gate_s": round(gate_s, 4), "gate_ratio_to_clip": round(gate_s / (decode + embed), 3),
        "ocr_no_text_s": round(no_text, 4), "ocr_text_s": round(with_text, 4),
        "no_text_per_s": round(1 / no_text, 2), "text_per_s": round(1 / with_text, 2),
        "no_text_ratio_to_clip": round(no_text / (decode + embed), 3), "text_photos_read": f"{found}/{n}",
        "gate_false_positives": (false_positives := sum(gate.has_text(d) for d in drafts)),
        # what `index --ocr` adds per photo without text on average: the gate, plus a full read where it misfires
        "added_no_text_s": round(gate_s + false_positives / n * with_text, 4),
        "added_ratio_to_clip": round((gate_s + false_positives / n * with_text) / (decode + embed), 3),
    }


def hybrid_figures(folder: Path, images: int, queries: int) -> dict:
    os.environ[config.CACHE_ENV] = str(folder / "cache")
    encoder = load_encoder("ViT-B-32", None, "cpu")
    api.export_text_tower(encoder)
    library = Library(folder / "lib", create=True)
    library.use_encoder(encoder)
    fill_library(library, encoder.identity.dim, images, 5000)
    rng = np.random.default_rng(1)
    with_text = rng.choice(np.arange(1, images + 1), images // 10, replace=False)
    texts = [(int(i), None, " ".join(rng.choice(WORDS, 4)) + f" {rng.integers(1000, 99999)}") for i in with_text]
    library.store.set_ocr(texts)
    library = Library(folder / "lib")  # opened afresh, as a new command would
    searches = {
        "clip": [("a dog on a beach", "clip"), ("red car at night", "clip")],
        "hybrid_scene": [("a dog on a beach", "hybrid"), ("red car at night", "hybrid")],
        "hybrid_words": [("parking ticket", "hybrid"), (texts[0][2].split()[-1], "hybrid")],
    }
    for query, mode in [case for cases in searches.values() for case in cases]:  # warm every path once
        api.search(library, query, 10, mode=mode)
    times: dict[str, list[float]] = {name: [] for name in searches}
    for i in range(queries):  # interleaved, so drift on the machine falls on every kind alike
        for name, cases in searches.items():
            query, mode = cases[i % len(cases)]
            started = time.perf_counter()
            api.search(library, query, 10, mode=mode)
            times[name].append((time.perf_counter() - started) * 1000)
    figures = {f"{name}_p50_ms": round(statistics.median(t), 2) for name, t in times.items()}
    figures["hybrid_words_ratio"] = round(figures["hybrid_words_p50_ms"] / figures["clip_p50_ms"], 3)
    figures["hybrid_scene_ratio"] = round(figures["hybrid_scene_p50_ms"] / figures["clip_p50_ms"], 3)
    figures["images"] = images
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=8, help="camera-size photos of each kind")
    parser.add_argument("--images", type=int, default=100_000, help="items in the hybrid query library")
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = {"ocr": ocr_figures(Path(tmp), args.photos), "hybrid": hybrid_figures(Path(tmp), args.images,
                                                                                         args.queries)}
    if args.json:
        print(json.dumps(result))
        return
    ocr, hybrid = result["ocr"], result["hybrid"]
    print(f"CLIP ViT-B-32 per photo: {ocr['clip_s'] * 1000:.0f} ms (decode {ocr['clip_decode_s'] * 1000:.0f} + "
          f"encoder {ocr['clip_encoder_s'] * 1000:.0f})")
    print(f"index --ocr, added per photo without text (the gate on the decoded image): {ocr['gate_s'] * 1000:.1f} ms "
          f"= {ocr['gate_ratio_to_clip']:.2f} × CLIP; gate false positives {ocr['gate_false_positives']}, so on "
          f"average {ocr['added_no_text_s'] * 1000:.0f} ms = {ocr['added_ratio_to_clip']:.2f} × CLIP")
    print(f"OCR read from the file, photo without text: {ocr['ocr_no_text_s'] * 1000:.0f} ms = "
          f"{ocr['no_text_ratio_to_clip']:.2f} × CLIP ({ocr['no_text_per_s']}/s); with text: "
          f"{ocr['ocr_text_s'] * 1000:.0f} ms ({ocr['text_per_s']}/s), read {ocr['text_photos_read']}")
    print(f"{hybrid['images']:,} items: CLIP-only p50 {hybrid['clip_p50_ms']} ms; hybrid, words that match "
          f"{hybrid['hybrid_words_p50_ms']} ms ({hybrid['hybrid_words_ratio']} ×); hybrid, a scene "
          f"{hybrid['hybrid_scene_p50_ms']} ms ({hybrid['hybrid_scene_ratio']} ×)")


if __name__ == "__main__":
    main()
