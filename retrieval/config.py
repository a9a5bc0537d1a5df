"""Every default and fixed name clipdex uses, in one place, so a change of policy is a one-line edit."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
MODEL_CONFIG_DIR = PACKAGE_DIR / "models" / "openclip" / "model_configs"
SAMPLE_DATA_DIR = PACKAGE_DIR.parent / "sample_data"
SAMPLE_MODEL = SAMPLE_DATA_DIR / "clipdex-small.safetensors"  # its weights, for fine-tuning and torch runs
SAMPLE_MODEL_FOLDER = SAMPLE_DATA_DIR / "clipdex-small"  # the same model as a folder: what `--model sample` runs
SAMPLE_CAPTIONS = SAMPLE_DATA_DIR / "captions.csv"

IMAGE, CAPTION = "image", "caption"  # the kinds of item a library holds

# The model a new library gets when the user names none: the catalogue's default model folder, fetched from the
# hub once and run without torch (models/catalogue.py says which it is, at which commit).
DEFAULT_MODEL = "default"
# open_clip's default weights: what `--model ViT-B-32` means without --pretrained, and what fine-tuning starts from.
OPENCLIP_DEFAULT_MODEL = "ViT-B-32"
OPENCLIP_DEFAULT_PRETRAINED = "laion2b_s34b_b79k"


def pretrained_for(name: str, named: str | None) -> str | None:
    """The weights `name` is loaded with: the tag, file or commit the user `named`, else open_clip's default tag for
    its default architecture, else none (folders, project configs and checkpoints carry their own weights)."""
    if named is not None:
        return named
    return OPENCLIP_DEFAULT_PRETRAINED if name == OPENCLIP_DEFAULT_MODEL else None


LIBRARY_ENV = "CLIPDEX_LIBRARY"
CACHE_ENV = "CLIPDEX_CACHE"  # where per-model artifacts (the exported text tower) are kept
DATABASE_ENV = "CLIPDEX_DATABASE_URL"
PAUSE_ENV = "CLIPDEX_PAUSE_AT"  # tests only: a pause point to stop at (retrieval/pause.py)
PAUSE_FILE_ENV = "CLIPDEX_PAUSE_FILE"  # tests only: created when the process reaches it
DATABASE_FILE = "library.db"
LIBRARY_CONFIG_FILE = "config.json"  # per-library settings, e.g. an external database URL (never a password)
LOCK_FILE = "index.lock"

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi"})  # decoded with PyAV
VIDEO_FRAME_SECONDS = 2.0  # a video is embedded as one frame every this many seconds…
VIDEO_MAX_FRAMES = 300  # …and at most this many frames (10 minutes at the default)
VIDEO_SKIP_AHEAD_SECONDS = 0.5  # non-reference frames are skipped while the next moment is further ahead than this
RAW_EXTENSIONS = frozenset({".dng", ".cr2", ".cr3", ".nef", ".arw", ".raf", ".orf", ".rw2"})  # camera RAW (LibRaw)
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic", ".heif"} | RAW_EXTENSIONS
    | VIDEO_EXTENSIONS
)
# watch: a batch of changes is indexed once the folders were quiet this long (a file being copied keeps
# changing), or after the longer wait while changes keep coming (a burst becomes a few batches)
WATCH_SETTLE_SECONDS = 2.0
WATCH_MAX_WAIT_SECONDS = 30.0
WATCH_TICK_MS = 1000  # how often a quiet watcher wakes (and notices a stop request)

# A running watch or serve answers the CLI's queries on an owner-only unix socket in the library folder.
SOCKET_FILE = "clipdex.sock"
NO_SERVER_ENV = "CLIPDEX_NO_SERVER"  # "1": every query runs in its own process
KEEP_ALIVE_ENV = "CLIPDEX_KEEP_ALIVE"
KEEP_ALIVE_SECONDS = 300.0  # watch holds the text tower and index this long after a query, then drops them
SOCKET_CONNECT_SECONDS = 0.5
SOCKET_SILENCE_SECONDS = 3.0  # a server silent this long (it beats while it works) is given up: the CLI answers
SOCKET_BEAT_SECONDS = 0.5
SOCKET_ANSWER_SECONDS = 300.0  # the whole answer, beats included, must end this soon (checked at every chunk)…
SOCKET_ANSWER_ENV = "CLIPDEX_ANSWER_SECONDS"  # (which this overrides)
SOCKET_REPLY_SECONDS = 10.0  # …and its line, once begun, this soon: a server writes it at once
SOCKET_MAX_REQUEST_BYTES = 1 << 20
SOCKET_MAX_REPLY_BYTES = 64 << 20  # a longer answer is not read: the CLI answers itself
SOCKET_MAX_REPLY_DEPTH = 8  # an answer's JSON nests 5 deep (reply, result, hits, hit, tags): deeper is refused

DEFAULT_TOP_K = 10
DEFAULT_CAPTIONS_K = 5  # captions shown for one photo on the web page
NEAR_KM = 10.0  # "near Kyoto" and --near without --km: photos within this of the place's centre
DEFAULT_DUPLICATE_THRESHOLD = 0.95  # cosine at which two photos count as copies
DEFAULT_BATCH_SIZE = 32
PREPACK_FROM_IMAGES = 256  # an image tower opened for fewer images skips ONNX Runtime's weight prepacking
# Decode workers: one per core; they take turns with the encoder, which uses every core too (indexer/embedders.py).
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1  # ours to use
DEFAULT_DECODE_WORKERS = CORES
# Images declaring more pixels than this are refused from their header, before decoding (decompression bombs).
# Pillow itself refuses more than 2 × its own limit (≈ 179 MP) and warns above ≈ 89 MP; clipdex checks first.
MAX_IMAGE_PIXELS = 178_000_000
# Files larger than this are refused before they are read (nothing a camera writes as one image comes close).
MAX_IMAGE_FILE_BYTES = 512 * 1024 * 1024

# OCR (index --ocr): text is detected on a copy this small first (most photos have none), then read with the
# longer side at OCR_SIDE; lines recognised with less confidence are dropped.
OCR_GATE_SIDE = 320
OCR_SIDE = 1280
OCR_MIN_CONFIDENCE = 0.5
# The gate passes a photo when a box on its small copy is shaped like a line of words: at least this high (gate
# pixels), this many times as wide as high, with this score (bench/ocr_gate.py: misfires 16 % → 3 % of photos
# without text, every text photo it found kept).
OCR_GATE_MIN_HEIGHT = 10
OCR_GATE_MIN_ASPECT = 3.0
OCR_GATE_MIN_SCORE = 0.5
OCR_BATCH = 16  # images read per committed batch
SEARCH_MODES = ("hybrid", "clip", "text")
SORT_ORDERS = ("score", "date")  # best first, or the same matches newest first
READ_KINDS = ("place", "date", "camera")  # phrases a search sentence is read for (search/sentence.py)
HYBRID_CANDIDATES = 200  # CLIP and full-text rankings this deep are fused
RRF_K = 60  # reciprocal rank fusion: score = sum of 1 / (RRF_K + rank) over the rankings an item is in
OCR_SNIPPET_CHARS = 80  # the recognised text shown with a hit that matched it
# Strong and weak matches of text queries (relevance.py): made-up words searched in the library; a hit is strong
# when its cosine reaches this quantile of their best scores.
RELEVANCE_PROBES = 64
RELEVANCE_SEED = 20261205
RELEVANCE_QUANTILE = 0.75
RELEVANCE_FILE = "relevance.json"  # in the library folder: its floor, for its model and contents
RELEVANCE_FILE_MAX_BYTES = 4096

# Vocabulary and tags (captions --from builtin, index --tags): concepts of at most this many characters, at most
# this many of them; prompts embedded per encoder call. A photo's tags are the concepts whose probability under
# CLIP's softmax over the vocabulary (at the model's logit scale) reaches TAG_MIN_PROBABILITY, the likeliest
# TAG_MAX_PER_IMAGE at most. Models whose logit scale is unknown (exports made before it was recorded) use CLIP's.
VOCABULARY_MAX_CHARS = 60
VOCABULARY_MAX_CONCEPTS = 20_000
VOCABULARY_MAX_BYTES = 16 * 2**20  # a file larger than this cannot be a vocabulary (20,000 concepts with comments)
VOCABULARY_BATCH = 512
TAG_MIN_PROBABILITY = 0.15
TAG_MAX_PER_IMAGE = 5
TAG_BATCH = 2_000  # images tagged per committed batch
FACTS_BATCH = 500  # files whose position and camera are read per committed batch
DEFAULT_LOGIT_SCALE = 100.0
CAPTION_SOURCES = ("auto", "corpus", "builtin", "all")

# The hub endpoint in use ($HF_ENDPOINT, else huggingface.co) must accept a connection this soon, or it is taken
# for unreachable and nothing is downloaded (huggingface_hub itself would retry for about 46 s).
HUB_PROBE_SECONDS = 1.5
HUB_ANSWER_SECONDS = 30.0  # the hub's listing of a folder must arrive this soon (its file reads time out by themselves)
HUB_ANSWER_ENV = "CLIPDEX_HUB_ANSWER_SECONDS"
MAX_MODEL_FOLDER_BYTES = 16 * 10**9  # what a hub may list for one model folder (the largest recommended: 2 GB)

# Vector index choice: exact flat search up to this many items, then IVF (inverted lists, approximate).
IVF_MIN_ITEMS = 100_000
IVF_MAX_LISTS = 4096
# IVF probes are tuned after each build until recall@10 against exact search reaches this on the library's own
# data (a margin over the 0.95 promised for real queries).
IVF_TUNING_RECALL = 0.97
IVF_TUNING_QUERIES = 200
# Past this many items the lists hold PQ codes (64 bytes a 512-d vector instead of 2 KB: 0.7 GB of index at 10M
# instead of 20 GB) and the best candidates (a shortlist) are re-ranked with the exact vectors from the store.
IVFPQ_MIN_ITEMS = 1_000_000
PQ_RERANK = 100  # the shortlist's length to start tuning from; doubled while that finds more (up to the max)
PQ_MAX_RERANK = 1600
INDEX_TYPES = ("auto", "flat", "ivf", "ivfpq")

# Everyday commands run the model's towers exported to ONNX (no torch import); an export is used only if its
# vectors match torch's to at least this cosine on probe sentences / probe images.
TEXT_EXPORT_MIN_COSINE = 0.999
IMAGE_EXPORT_MIN_COSINE = 0.999
MIN_PRECISION_COSINE = 0.99  # bf16, fp16 or an int8 image tower must match fp32 this well, or it is not used
EXPORT_OPSET = 18
# An int8 text tower replaces the fp32 export only when its vectors keep this cosine to torch's fp32 ones on the
# probe sentences and these many sample captions, and it answers a short query at least this much faster here.
TEXT_INT8_MIN_COSINE = 0.995
TEXT_PROBE_CAPTIONS = 100
TEXT_INT8_MIN_SPEEDUP = 1.2
EXPORT_MIN_FREE_BYTES = 64 * 2**20  # an export that failed with less free space than this is said to have filled it
FOLDER_FORMAT = 3  # of prepared model folders: bumped when what clipdex writes changes (older ones are made anew)

CHECKPOINT_SUFFIXES = (".safetensors",)  # a --model ending so is a clipdex checkpoint file
# The sha256 of weights files and model folders' files is remembered in the cache folder by the file's path, size,
# times and inode, so an unchanged file is not read again on every run; at most this many files are remembered.
FINGERPRINTS_FILE = "weights-fingerprints.json"
FINGERPRINTS_KEPT = 256

# Seed for models created without weights, so "random weights" mean the same weights in every process.
INIT_SEED = 0


def default_library_dir() -> Path:
    """The library folder: $CLIPDEX_LIBRARY, else the platform's user data folder."""
    env = os.environ.get(LIBRARY_ENV)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("clipdex", appauthor=False))


def default_cache_dir() -> Path:
    """Per-model artifacts shared by every library: $CLIPDEX_CACHE, else the platform's user cache folder."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("clipdex", appauthor=False))


# ------------------------------------------------------------------------------------------------------------
# Limits on untrusted input, and `clipdex serve` defaults. A query or request must not cost more than a person
# could mean by it: these bound time (terms, characters), memory (pixels, bodies, caches) and who may connect.

# Query text, for the CLI and the HTTP API alike (retrieval/search/terms.py): longer queries are cut to the model's
# 77 tokens anyway, so more only costs time under the server's one query lock.
MAX_QUERY_CHARS = 1_000
MAX_CAPTION_CHARS = 2_000  # a caption longer than this is refused (the text tower reads 77 tokens of it)
WEB_MAX_SELECTED = 1_000  # photos one request may name (find more like them, export their sidecars)
WEB_MAX_CAPTIONS = 5_000  # captions one HTTP request may add (the CLI has no limit)
MAX_QUERY_TERMS = 16
MAX_TERM_WEIGHT = 100.0  # |weight| of one term, e.g. "2:golden retriever"; more says nothing a smaller one cannot
QUERY_CACHE_TEXTS = 256  # query sentences whose vectors a running process remembers (least recently used go)

# An uploaded image declaring more pixels than this is refused from its header (a 190 KB PNG can declare
# 14000×14000, ≈ 600 MB once decoded); far above what the model sees, and above most phone cameras (12–48 MP).
WEB_MAX_UPLOAD_PIXELS = 40_000_000
WEB_DECODE_SLOTS = 2  # images decoded at once (threads decoding) by the server, for uploads and thumbnails
# A request body larger than this is refused as it arrives (413), before it is read or stored anywhere.
WEB_MAX_BODY_BYTES = 20 * 1024 * 1024
WEB_BODY_SECONDS = 30.0  # a request body must have arrived this long after the server asked for it
WEB_HEAD_SECONDS = 10.0  # a request head must have arrived this long after its first byte (or the connection)
# serve raises its soft open-file limit up to this (within the hard limit) and serves at most that many
# connections at once, less these kept for the library's own files
WEB_MAX_OPEN_FILES = 65_536
WEB_RESERVED_FILES = 64
WEB_THUMBNAIL_SIDES = (320, 640)  # a thumbnail's longest side: the page asks for the one its tile needs at the
# screen's pixel density (a 2× screen: 640), so each size is made once and cached
PREVIEW_COLUMNS = 24  # --preview: a thumbnail's width in terminal cells
# Host names a browser may use to reach a server on this machine (with any port): any other Host header is a
# sign of DNS rebinding and is refused.
WEB_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
# Serving beyond loopback needs an access token: given, or read from this variable, or generated at start.
WEB_TOKEN_ENV = "CLIPDEX_TOKEN"
WEB_MIN_TOKEN_CHARS = 16
WEB_TOKEN_COOKIE = "clipdex_session"  # + "_PORT": cookies are shared by every port of a host
WEB_SESSION_SECONDS = 14 * 24 * 3600  # a signed-in browser signs in again after this
