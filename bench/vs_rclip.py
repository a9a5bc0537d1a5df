"""Everyday commands of clipdex beside rclip 3.3.0 (a peer CLI on ONNX Runtime), as whole processes, offline.

    python bench/vs_rclip.py [--photos 64] [--rounds 3] [--rclip-venv PATH] [--work DIR] [--clipdex CMD] [--json]

Both tools get the same camera JPEGs (4000×3000 q90, made once under $TMPDIR) and the same random ViT-B-32-256
weights (seeded, saved once as a torch state dict `weights.pt`; clipdex loads them with `--pretrained`, rclip gets
them exported to its own ONNX layout under $RCLIP_DATADIR). Each command is a new process, timed by the wall clock;
in each round rclip, clipdex (fp32) and clipdex --precision int8 take turns (the order reversed every other
round); the figures are medians over the rounds. Scenarios:

- first: a new index of --photos photos, then one text query. clipdex: `clipdex -L LIB index FOLDER --model
  ViT-B-32-256 --pretrained weights.pt` + `clipdex -L LIB search QUERY -k 5 -f`; rclip, in the folder with a new
  db.sqlite3: `rclip -f -t 5 QUERY` (it indexes the folder first). clipdex's per-model cache ($CLIPDEX_CACHE, kept
  across rounds) is warm: one untimed clipdex run beforehand prepares the model (its one-time ONNX step).
- incremental: 8 new photos (distinct content: rclip reuses vectors of files whose hash it knows) copied into the
  indexed folder; clipdex index + search; rclip `rclip -f -t 5 QUERY` (which re-indexes first).
- query: one query in a new process with nothing new; clipdex search; rclip `rclip -n -f -t 5 QUERY`.

Each reports rclip_s, clipdex_s, speedup = rclip_s / clipdex_s, and clipdex_int8_s, speedup_int8 beside.
Before timing, the two are checked to hold the same model: one photo and the query embedded through rclip's own
code on its ONNX files, through open_clip on the weights and through clipdex's encoder (cosines printed).

rclip is installed from the registry (`pip install rclip==3.3.0`) into its own venv: a temporary one, or
--rclip-venv PATH (made there if missing, reused when it already holds rclip 3.3.0). Its runs get
HF_HUB_OFFLINE=1; that rclip never imported huggingface_hub is checked. The last line of stdout is one JSON
object with every figure (--json).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.synthetic import camera_jpegs  # noqa: E402

RCLIP_VERSION = "3.3.0"
MODEL = "ViT-B-32-256"
RCLIP_MODEL_DIR = "ViT-B-32-256-datacomp_s34b_b86k"  # the folder name rclip 3.3 looks for under $RCLIP_DATADIR
RCLIP_LEGAL = ("LICENSE", "OPENAI-CLIP-MIT.txt", "README.md", "THIRD_PARTY_NOTICES.md")
QUERY = "a photo of a dog"
TOP_K = 5
NEW_PHOTOS = 8
SEED = 0
SCENARIOS = ("first", "incremental", "query")
TOOLS = ("rclip", "clipdex", "clipdex_int8")

# Run inside rclip's venv: one photo and one text through rclip's own preprocessing, tokenizer, ONNX sessions
# and normalisation; and whether anything reached for the network library.
RCLIP_EMBED = r"""
import json, sys
from rclip.model import Model
from rclip.utils.helpers import read_image
model = Model()
model.ensure_downloaded()
image = model.compute_image_features([read_image(sys.argv[1])])[0]
text = model.compute_text_features([sys.argv[2]])[0]
print(json.dumps({"image": image.tolist(), "text": text.tolist(), "hub": "huggingface_hub" in sys.modules}))
"""

# Run with clipdex's interpreter: the same through clipdex's encoder for the model (its prepared model on the CPU).
CLIPDEX_EMBED = r"""
import json, sys
from PIL import Image
import clipdex.api as api
encoder = api.load_model(model=sys.argv[1], pretrained=sys.argv[2], device="cpu")
with Image.open(sys.argv[3]) as im:
    image = encoder.encode_images([im.convert("RGB")])[0]
text = encoder.encode_texts([sys.argv[4]])[0]
print(json.dumps({"image": [float(x) for x in image], "text": [float(x) for x in text]}))
"""


def run(command: list[str], env: dict | None = None, cwd: Path | None = None) -> tuple[float, str]:
    """Wall seconds and stdout of one command in a new process; a failure stops the bench with its stderr."""
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        tail = (done.stderr or done.stdout)[-4000:]
        raise SystemExit(f"failed ({done.returncode}) after {seconds:.1f} s: {shlex.join(command)}\n{tail}")
    return seconds, done.stdout


def rclip_venv(venv: Path) -> float | None:
    """rclip 3.3.0 in `venv`, installed from the registry unless already there; the install's seconds (None:
    reused)."""
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import importlib.metadata as m; print(m.version('rclip'))"]
    if (venv / "bin" / "rclip").exists() and subprocess.run(check, capture_output=True, text=True).stdout.strip() \
            == RCLIP_VERSION:
        return None
    started = time.perf_counter()
    run([sys.executable, "-m", "venv", str(venv)])
    run([str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", f"rclip=={RCLIP_VERSION}"])
    return time.perf_counter() - started


def random_model(work: Path):
    """The seeded random ViT-B-32-256 (eval mode) with open_clip's own eval preprocessing, its weights saved once
    as a torch state dict at work/weights.pt (the file both tools get)."""
    import open_clip
    import torch

    torch.manual_seed(SEED)
    logging.disable(logging.WARNING)  # open_clip's "no pretrained weights loaded": random weights are the point
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(MODEL)
    finally:
        logging.disable(logging.NOTSET)
    path = work / "weights.pt"
    if path.exists():
        model.load_state_dict(torch.load(path, map_location="cpu"))
    else:
        torch.save(model.state_dict(), path)
    return model.eval(), preprocess, path


def rclip_datadir(model, weights: Path, datadir: Path) -> None:
    """The files rclip 3.3 loads offline, made from `model`: the two towers in ONNX (input `input`, output
    `output`, raw features: rclip normalises them itself), open_clip's BPE vocabulary, and the legal files
    (rclip 3.3.0 reads none of them; later versions ship them beside the model). An export newer than `weights`
    is kept."""
    import open_clip
    import torch

    class Tower(torch.nn.Module):
        def __init__(self, encode) -> None:
            super().__init__()
            self.model, self.encode = model, encode

        def forward(self, input):  # noqa: A002 (the input's name in the ONNX file)
            return self.encode(input)

    folder = datadir / RCLIP_MODEL_DIR
    folder.mkdir(parents=True, exist_ok=True)
    size = model.visual.image_size[0] if isinstance(model.visual.image_size, tuple) else model.visual.image_size
    towers = {"visual.onnx": (model.encode_image, torch.randn(2, 3, size, size)),
              "textual.onnx": (model.encode_text, torch.zeros(2, model.context_length, dtype=torch.int64))}
    for name, (encode, example) in towers.items():
        if (folder / name).exists() and (folder / name).stat().st_mtime > weights.stat().st_mtime:
            continue
        # The TorchScript exporter, with grad enabled: under torch.no_grad() the fused MHA fast path is taken,
        # which this exporter cannot export. Its deprecation notice and the advanced-indexing note (the indices,
        # the text's end-of-text positions, are never negative) are known and silenced.
        tmp = folder / f"{name}.tmp"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", "Exporting aten::index operator", UserWarning)
            torch.onnx.export(Tower(encode).eval(), (example,), str(tmp), dynamo=False, input_names=["input"],
                              output_names=["output"], dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                              opset_version=17)
        os.replace(tmp, folder / name)
    vocab = datadir / "tokenizer" / "bpe_simple_vocab_16e6.txt.gz"
    vocab.parent.mkdir(exist_ok=True)
    shutil.copyfile(Path(open_clip.__file__).parent / vocab.name, vocab)
    for name in RCLIP_LEGAL:
        (datadir / name).write_text("Random ViT-B-32-256 weights made by clipdex's bench/vs_rclip.py.\n")


def place(photos: list[Path], folder: Path) -> None:
    """`photos` in `folder`, hard-linked (copied where links cannot be made)."""
    folder.mkdir(parents=True, exist_ok=True)
    for photo in photos:
        try:
            os.link(photo, folder / photo.name)
        except OSError:
            shutil.copyfile(photo, folder / photo.name)


def cosine(a, b) -> float:
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


class Bench:
    def __init__(self, clipdex: list[str], rclip: Path, weights: Path, work: Path) -> None:
        self.clipdex, self.rclip, self.weights, self.work = clipdex, rclip, weights, work
        # Timed as installed, where Python keeps its compiled modules (pip compiled rclip's at install; clipdex's,
        # an editable install, are kept on its first run unless PYTHONDONTWRITEBYTECODE is set, as in a sandbox).
        self.clipdex_env = {**{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
                            "CLIPDEX_CACHE": str(work / "clipdex-cache")}
        self.datadir = work / "rclip-data"
        self.rclip_env = {**os.environ, "RCLIP_DATADIR": str(self.datadir), "HF_HUB_OFFLINE": "1"}
        self.last: dict[str, str] = {}  # each tool's last printed paths

    def run_rclip(self, folder: Path, *options: str) -> float:
        seconds, out = run([str(self.rclip), *options, "-f", "-t", str(TOP_K), QUERY], self.rclip_env, folder)
        self.last["rclip"] = out
        return seconds

    def run_clipdex(self, name: str, library: Path, folder: Path | None) -> float:
        """clipdex index (when `folder` is given) and then search, both new processes; their seconds together."""
        precision = ["--precision", "int8"] if name == "clipdex_int8" else []
        seconds = 0.0
        if folder is not None:
            seconds += run([*self.clipdex, "-L", str(library), "index", str(folder), "--model", MODEL,
                            "--pretrained", str(self.weights), *precision], self.clipdex_env)[0]
        search, out = run([*self.clipdex, "-L", str(library), "search", QUERY, "-k", str(TOP_K), "-f", *precision],
                          self.clipdex_env)
        self.last[name] = out
        return seconds + search

    def scenario(self, scenario: str, tool: str, folder: Path, libraries: dict[str, Path]) -> float:
        if tool == "rclip":
            if scenario == "first":
                for db in self.datadir.glob("db.sqlite3*"):
                    db.unlink()
            return self.run_rclip(folder, *(["-n"] if scenario == "query" else []))
        return self.run_clipdex(tool, libraries[tool], None if scenario == "query" else folder)

    def warm_up(self, photos: list[Path], tools: tuple[str, ...]) -> float:
        """One untimed clipdex index + search per precision (the model's one-time preparation), on 2 photos."""
        folder = self.work / "warm-up-photos"
        shutil.rmtree(folder, ignore_errors=True)
        place(photos[:2], folder)
        seconds = 0.0
        for tool in tools:
            if tool != "rclip":
                shutil.rmtree(self.work / f"warm-up-{tool}", ignore_errors=True)
                seconds += self.run_clipdex(tool, self.work / f"warm-up-{tool}", folder)
        return seconds


def agreement(bench: Bench, model, preprocess, photos: list[Path]) -> dict:
    """Cosines of one photo's and the query's embeddings: rclip (its code, its ONNX files) against open_clip on
    the weights and against clipdex's encoder; and, for scale, two different photos through open_clip."""
    import open_clip
    import torch
    from PIL import Image

    rclip_python = bench.rclip.parent / "python"
    out = run([str(rclip_python), "-c", RCLIP_EMBED, str(photos[0]), QUERY], bench.rclip_env)[1]
    theirs = json.loads(out.strip().splitlines()[-1])
    with torch.no_grad():
        pixels = []
        for photo in photos[:2]:
            with Image.open(photo) as im:
                pixels.append(preprocess(im.convert("RGB")))
        images = model.encode_image(torch.stack(pixels)).numpy()
        text = model.encode_text(open_clip.get_tokenizer(MODEL)([QUERY])).numpy()[0]
    figures = {"rclip_used_hub": theirs["hub"],
               "image_rclip_vs_open_clip": cosine(theirs["image"], images[0]),
               "text_rclip_vs_open_clip": cosine(theirs["text"], text),
               "two_photos_open_clip": cosine(images[0], images[1])}
    try:
        out = run([*python_of(bench.clipdex), "-c", CLIPDEX_EMBED, MODEL, str(bench.weights), str(photos[0]), QUERY],
                  bench.clipdex_env)[1]
        ours = json.loads(out.strip().splitlines()[-1])
        figures["image_rclip_vs_clipdex"] = cosine(theirs["image"], ours["image"])
        figures["text_rclip_vs_clipdex"] = cosine(theirs["text"], ours["text"])
    except (SystemExit, ValueError, KeyError) as error:
        print(f"clipdex's encoder could not be asked directly: {str(error).splitlines()[0]}")
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in figures.items()}


def python_of(clipdex: list[str]) -> list[str]:
    """The interpreter that runs `clipdex` (its venv's python beside an entry-point script)."""
    if len(clipdex) > 1 and clipdex[1:3] == ["-m", "clipdex"]:
        return clipdex[:1]
    beside = Path(clipdex[0]).parent / "python"
    return [str(beside)] if beside.exists() else [sys.executable]


def default_clipdex() -> str:
    script = Path(ROOT) / ".venv" / "bin" / "clipdex"
    return str(script) if script.exists() else shlex.join([sys.executable, "-m", "clipdex"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=64, help="photos in the first index (8 more are added)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rclip-venv", type=Path, help="venv holding rclip 3.3.0 (made there if missing)")
    parser.add_argument("--work", type=Path, help="folder for weights, ONNX files and caches, kept for the next "
                        "run (default: a temporary one)")
    parser.add_argument("--clipdex", default=default_clipdex(), help="the clipdex command (default: %(default)s)")
    parser.add_argument("--no-int8", action="store_true", help="skip the clipdex --precision int8 column")
    parser.add_argument("--json", action="store_true", help="end with one JSON object of the figures")
    args = parser.parse_args()
    tools = tuple(t for t in TOOLS if not (args.no_int8 and t == "clipdex_int8"))

    photos = sorted(camera_jpegs(args.photos + NEW_PHOTOS).iterdir())
    first, new = photos[: args.photos], photos[args.photos:]
    with tempfile.TemporaryDirectory(prefix="clipdex-vs-rclip-") as tmp:
        work = (args.work or Path(tmp)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        venv = (args.rclip_venv or work / "rclip-venv").resolve()
        install_s = rclip_venv(venv)
        print(f"rclip {RCLIP_VERSION}: " + (f"installed from the registry into {venv} in {install_s:.1f} s"
                                            if install_s is not None else f"reused from {venv}"))

        started = time.perf_counter()
        model, preprocess, weights = random_model(work)
        bench = Bench(shlex.split(args.clipdex), venv / "bin" / "rclip", weights, work)
        rclip_datadir(model, weights, bench.datadir)
        print(f"{MODEL}, random weights (seed {SEED}) in {weights} ({weights.stat().st_size / 2**20:.0f} MB), "
              f"and in rclip's ONNX layout in {bench.datadir}, ready in {time.perf_counter() - started:.1f} s")

        warm_s = bench.warm_up(photos, tools)
        print(f"clipdex ({args.clipdex}) warm-up, untimed: index + search of 2 photos per precision, preparing "
              f"the model in its cache {bench.clipdex_env['CLIPDEX_CACHE']}: {warm_s:.1f} s")

        same = agreement(bench, model, preprocess, photos)
        del model
        print(f"same model: cosine rclip vs open_clip: image {same['image_rclip_vs_open_clip']:.6f}, text "
              f"{same['text_rclip_vs_open_clip']:.6f}" + (
                  f"; rclip vs clipdex: image {same['image_rclip_vs_clipdex']:.6f}, text "
                  f"{same['text_rclip_vs_clipdex']:.6f}" if "image_rclip_vs_clipdex" in same else "")
              + f" (two different photos, same model: {same['two_photos_open_clip']:.6f}); rclip offline, "
                f"huggingface_hub {'IMPORTED' if same['rclip_used_hub'] else 'never imported'}")

        times: dict[str, dict[str, list[float]]] = {s: {t: [] for t in tools} for s in SCENARIOS}
        top = {}
        for r in range(args.rounds):
            folder = work / f"photos-{r}"
            shutil.rmtree(folder, ignore_errors=True)
            place(first, folder)
            libraries = {t: work / f"library-{r}-{t}" for t in tools if t != "rclip"}
            for library in libraries.values():
                shutil.rmtree(library, ignore_errors=True)
            order = tools if r % 2 == 0 else tools[::-1]
            for scenario in SCENARIOS:
                if scenario == "incremental":
                    place(new, folder)
                for tool in order:
                    times[scenario][tool].append(bench.scenario(scenario, tool, folder, libraries))
            top = {t: [Path(line).name for line in bench.last[t].split()][:TOP_K] for t in tools}
            print(f"round {r + 1}/{args.rounds}: " + "; ".join(
                f"{s} " + " ".join(f"{t} {times[s][t][-1]:.2f} s" for t in tools) for s in SCENARIOS))
            shutil.rmtree(folder, ignore_errors=True)
            for library in libraries.values():
                shutil.rmtree(library, ignore_errors=True)

    labels = {"first": f"first index of {args.photos} photos + one query",
              "incremental": f"{NEW_PHOTOS} new photos: index + one query", "query": "one query in a new process"}
    figures: dict = {}
    print(f"medians of {args.rounds} rounds, {args.photos} JPEGs 4000×3000 q90, {os.cpu_count()} cores:")
    for scenario in SCENARIOS:
        row = {f"{t}_s": round(statistics.median(times[scenario][t]), 3) for t in tools}
        row["speedup"] = round(row["rclip_s"] / row["clipdex_s"], 3)
        if "clipdex_int8" in tools:
            row["speedup_int8"] = round(row["rclip_s"] / row["clipdex_int8_s"], 3)
        figures[scenario] = row
        print(f"  {labels[scenario]}: rclip {row['rclip_s']:.2f} s, clipdex {row['clipdex_s']:.2f} s "
              f"(speedup {row['speedup']:.2f}×)" + (f", clipdex int8 {row['clipdex_int8_s']:.2f} s (speedup "
                                                    f"{row['speedup_int8']:.2f}×)" if "clipdex_int8" in tools else ""))
    same_top = top.get("rclip") == top.get("clipdex")
    print(f"top {TOP_K} of the last query: rclip {top.get('rclip')}, clipdex {top.get('clipdex')}"
          + ("" if same_top else " (random weights: near-equal scores, so decoding differences can reorder them)"))
    figures.update({"photos": args.photos, "new_photos": NEW_PHOTOS, "rounds": args.rounds, "cores": os.cpu_count(),
                    "rclip_version": RCLIP_VERSION, "rclip_install_s": round(install_s, 1) if install_s else None,
                    "clipdex_warm_up_s": round(warm_s, 1), "agreement": same, "same_top_k": same_top})
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
