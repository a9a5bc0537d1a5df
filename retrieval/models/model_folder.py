"""A model as a self-describing folder, in the layout Immich publishes, run with ONNX Runtime, `tokenizers`, PIL
and numpy (no torch):

    config.json                      embed_dim, text_cfg.context_length (+ clipdex's own section, when it made it)
    textual/model.onnx               input `text`: int32 ids (batch, length); output `embedding`
    textual/tokenizer.json           (+ tokenizer_config.json: the pad token)
    visual/model.onnx                input `image`: float32 (batch, 3, H, W); output `embedding`
    visual/preprocess_cfg.json       size, mean, std, interpolation, resize_mode

A tower may fix its batch to 1 or its text length to the context (Immich's exports do): inputs are fed to fit.
Nothing here writes a folder; `folder_export.py` does, with torch.
"""

from __future__ import annotations

import functools
import hashlib
import html
import json
import string
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from clipdex.retrieval import config
from clipdex.retrieval.digest import weights_sha256
from clipdex.retrieval.errors import ClipdexError
from clipdex.retrieval.models.identity import ModelIdentity
from clipdex.retrieval.models.languages import query_language
from clipdex.retrieval.models.onnx_runtime import (
    MODEL_FILE, check_inputs, fixed_size, optimised_path, run_fitted, session, unit_rows,
)
from clipdex.retrieval.models.preprocess import ImagePreprocess

CONFIG_FILE = "config.json"
TEXT_DIR, IMAGE_DIR = "textual", "visual"
TOKENIZER_FILE, TOKENIZER_CONFIG_FILE = "tokenizer.json", "tokenizer_config.json"
PREPROCESS_FILE = "preprocess_cfg.json"
OWN_SECTION = "clipdex"  # what clipdex records in a config.json it writes (other readers ignore it)


def is_model_folder(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file() and any((path / tower / MODEL_FILE).is_file() for tower in (TEXT_DIR, IMAGE_DIR))


def folder_files(folder: Path, with_config: bool = True) -> list[Path]:
    """The files a folder's model is made of: its config and every file under its towers' folders, hidden and
    nested ones included (a graph may keep its weights as external data anywhere there: `.w.bin`,
    `weights/w.bin`), so no file the towers read can change unnoticed."""
    found = [folder / CONFIG_FILE] if with_config else []
    for tower in (TEXT_DIR, IMAGE_DIR):
        if (folder / tower).is_dir():
            found += sorted(p for p in (folder / tower).rglob("*") if p.is_file())
    return found


def files_checksums(folder: Path, with_config: bool = True) -> dict[str, str]:
    """sha256 of each of the folder's files by relative path, each remembered by its file's stamp."""
    try:
        return {path.relative_to(folder).as_posix(): weights_sha256(path) for path in folder_files(folder, with_config)}
    except OSError as exc:
        raise ClipdexError(f"cannot read the model folder {folder}: {exc.strerror or exc}") from None


def folder_fingerprint(folder: Path) -> str:
    """A folder's identity: the hash of its files' names and contents, so another export (or a changed file) is
    another model."""
    listing = json.dumps(sorted(files_checksums(folder).items()))
    return "files:" + hashlib.sha256(listing.encode()).hexdigest()


def config_digest(values: dict) -> str:
    """The sha256 of a config.json's contents, less the digest clipdex records in it: what a prepared folder keeps,
    so an edited config (a context_length of 3, another embed_dim) is another folder, made again."""
    own = {k: v for k, v in values.get(OWN_SECTION, {}).items() if k != "config"}
    return hashlib.sha256(json.dumps({**values, OWN_SECTION: own}, sort_keys=True).encode()).hexdigest()


def read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # (RecursionError: nested thousands deep)
        raise ClipdexError(f"the model folder's {path.name} cannot be read ({type(exc).__name__}): {path}") from None
    if not isinstance(value, dict):
        raise ClipdexError(f"the model folder's {path.name} is not a JSON object: {path}")
    return value


@dataclass(frozen=True)
class FolderConfig:
    """What config.json says: enough to know the model without opening its towers."""

    dim: int
    context_length: int
    logit_scale: float
    canonicalize: bool  # SigLIP-style text cleaning (lower case, no punctuation)
    nllb: bool  # NLLB's text tower: a FLORES-200 language code is read before the sentence
    optimised: bool  # saved already optimised by clipdex: loaded as it is
    own: dict  # clipdex's section ({} for folders made elsewhere)

    @classmethod
    def read(cls, folder: Path) -> "FolderConfig":
        values = read_json(folder / CONFIG_FILE)
        text = values.get("text_cfg") if isinstance(values.get("text_cfg"), dict) else {}
        own = values.get(OWN_SECTION) if isinstance(values.get(OWN_SECTION), dict) else {}
        kwargs = text.get("tokenizer_kwargs") if isinstance(text.get("tokenizer_kwargs"), dict) else {}
        dim = _number(values, "embed_dim", None, int, folder)
        context = _number(text, "context_length", 77, int, folder, "text_cfg.context_length")
        scale = _number(own, "logit_scale", config.DEFAULT_LOGIT_SCALE, float, folder, "clipdex.logit_scale")
        if not 0 < dim <= 65_536 or not 2 <= context <= 65_536:
            raise ClipdexError(f"the model folder's config.json gives impossible sizes (embed_dim {dim}, "
                               f"context_length {context}): {folder}")
        if not 0 < scale < 1e6:
            raise ClipdexError(f"the model folder's config.json gives an impossible clipdex.logit_scale ({scale:g}): "
                               f"{folder}")
        named = " ".join(str(text.get(key) or "") for key in ("hf_model_name", "hf_tokenizer_name")).lower()
        return cls(dim, context, scale, kwargs.get("clean") == "canonicalize", "nllb" in named,
                   own.get("optimised") is True, own)


def _number(values: dict, key: str, default, kind: type, folder: Path, shown: str | None = None):
    """values[key] as an int or float, finite (JSON allows Infinity and NaN); one line naming the field when not."""
    value = values.get(key, default)
    try:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise ValueError
        found = kind(value)
        if kind is int and found != value:
            raise ValueError
        return found
    except (TypeError, ValueError, OverflowError):
        raise ClipdexError(f"the model folder's config.json has no usable {shown or key} ({str(value)[:40]!r}): "
                           f"{folder}") from None


_PUNCTUATION = str.maketrans("", "", string.punctuation)


def clean_text(text: str, canonicalize: bool = False) -> str:
    """open_clip's text cleaning before tokenizing: HTML entities undone (twice, as it does), whitespace collapsed;
    SigLIP's canonical form also drops punctuation and case."""
    text = " ".join(html.unescape(html.unescape(text)).split())
    if canonicalize:  # (open_clip reads an underscore as a space before it drops punctuation)
        text = " ".join(text.replace("_", " ").translate(_PUNCTUATION).lower().split())
    return text


class TextTower:
    """Sentences → unit vectors: the folder's tokenizer.json through `tokenizers`, its text tower through ONNX
    Runtime."""

    def __init__(self, folder: Path, settings: FolderConfig, threads: int = 0, keep_as: Path | None = None) -> None:
        from concurrent.futures import ThreadPoolExecutor

        import onnxruntime  # noqa: F401 (imported here: an import on the thread would wait for the tokenizer's GIL)
        from tokenizers import Tokenizer

        root = folder / TEXT_DIR
        # ONNX Runtime lets go of the GIL while it builds a session, `tokenizers` holds it while it reads CLIP's
        # 49k merges: side by side, a cold query waits for the slower of the two (≈ 0.07 s sooner on ViT-B-32).
        with ThreadPoolExecutor(1, thread_name_prefix="clipdex-text-session") as opener:
            opening = opener.submit(session, root / MODEL_FILE, settings.optimised, False, threads, keep_as)
            try:
                self.tokenizer = Tokenizer.from_file(str(root / TOKENIZER_FILE))
            except Exception as exc:
                opening.cancel()
                raise ClipdexError(f"cannot read {root / TOKENIZER_FILE} ({type(exc).__name__})") from None
            self.session = opening.result()
        tokenizer_config = read_json(root / TOKENIZER_CONFIG_FILE) if (root / TOKENIZER_CONFIG_FILE).is_file() else {}
        pad = tokenizer_config.get("pad_token")
        pad = pad.get("content") if isinstance(pad, dict) else pad
        self.pad_id = (self.tokenizer.token_to_id(pad) if isinstance(pad, str) else None) or 0
        inputs = self.session.get_inputs()
        self.input = inputs[0].name
        self.with_mask = len(inputs) > 1 and inputs[1].name == "attention_mask"  # M-CLIP style exports
        self.dim = settings.dim
        check_inputs(root / MODEL_FILE, inputs, 2 if self.with_mask else 1, 2)
        self.dtype = np.int64 if inputs[0].type == "tensor(int64)" else np.int32
        self.fixed_batch, fixed_length = fixed_size(inputs[0].shape[0]), fixed_size(inputs[0].shape[1])
        self.context_length = fixed_length or settings.context_length
        self.fixed_length = fixed_length is not None
        self.canonicalize = settings.canonicalize
        self.language = query_language(None) if settings.nllb else None  # NLLB: the locale's, else English
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=self.context_length)
        self._untruncated = None
        # People repeat and refine queries (and a page reload asks again): recent ones are answered from memory.
        self._one = functools.lru_cache(maxsize=config.QUERY_CACHE_TEXTS)(self._encode_one)

    def read_in(self, language: str | None) -> None:
        """Read the texts from now on in `language` (a FLORES-200 code), for a tower that must be told it."""
        if self.language is not None and language is not None:
            self.language = language

    def ids(self, texts: Sequence[str]) -> np.ndarray:
        """(N, L) ids: padded to the context when the tower fixes it, else only to the longest text; an NLLB
        tower's texts each start with their language's code (a special token of its tokenizer)."""
        cleaned = [clean_text(t, self.canonicalize) for t in texts]
        if self.language is not None:
            cleaned = [self.language + text for text in cleaned]
        encodings = self.tokenizer.encode_batch(cleaned)
        length = self.context_length if self.fixed_length else max(len(e.ids) for e in encodings)
        ids = np.full((len(encodings), length), self.pad_id, dtype=self.dtype)
        for row, encoding in zip(ids, encodings):
            row[: len(encoding.ids)] = encoding.ids
        return ids

    def count_tokens(self, text: str) -> int:
        """Tokens of the text with its special tokens, before truncation. The shared tokenizer's settings are never
        switched (another thread may be encoding): a text that fills the context is counted by an untruncated copy."""
        cleaned = clean_text(text, self.canonicalize)
        ids = self.tokenizer.encode(cleaned).ids
        if len(ids) < self.context_length:
            return len(ids)
        if self._untruncated is None:
            from tokenizers import Tokenizer

            self._untruncated = Tokenizer.from_str(self.tokenizer.to_str())
            self._untruncated.no_truncation()
        return len(self._untruncated.encode(cleaned).ids)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) == 1:
            return self._one(texts[0], self.language)[None, :]
        return self._run(list(texts))

    def _run(self, texts: list[str]) -> np.ndarray:
        ids = self.ids(texts)
        if self.with_mask:
            mask = {"attention_mask": (ids != self.pad_id).astype(self.dtype)}
            return unit_rows(run_fitted(self.session, self.input, ids, None, mask), "text", len(ids), self.dim)
        return unit_rows(run_fitted(self.session, self.input, ids, self.fixed_batch), "text", len(ids), self.dim)

    def _encode_one(self, text: str, language: str | None) -> np.ndarray:  # (the language keys the cache too)
        vector = self._run([text])[0]
        vector.flags.writeable = False  # shared by every later asker of the same text
        return vector


class ImageTower:
    """Pixels prepared by `ImagePreprocess` → unit vectors through ONNX Runtime."""

    def __init__(self, folder: Path, settings: FolderConfig, prepack: bool = True, threads: int = 0,
                 keep_as: Path | None = None) -> None:
        path = folder / IMAGE_DIR / MODEL_FILE
        self.session = session(path, settings.optimised, prepack, threads, keep_as)
        inputs = self.session.get_inputs()
        check_inputs(path, inputs, 1, 4)
        first = inputs[0]
        self.input, self.fixed_batch, self.dim = first.name, fixed_size(first.shape[0]), settings.dim
        self.side = fixed_size(first.shape[2]) if fixed_size(first.shape[2]) == fixed_size(first.shape[3]) else None

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(pixels, dtype=np.float32)
        return unit_rows(run_fitted(self.session, self.input, batch, self.fixed_batch), "image", len(batch), self.dim)


def read_preprocess(folder: Path) -> ImagePreprocess:
    """The image tower's preprocessing from preprocess_cfg.json."""
    found = ImagePreprocess.from_settings(read_json(folder / IMAGE_DIR / PREPROCESS_FILE))
    if found is None:
        raise ClipdexError(f"the model folder's {PREPROCESS_FILE} asks for preprocessing clipdex does not do: {folder}")
    return found


class FolderModel:
    """A model folder behind the methods every everyday command uses (the torch Encoder has the same ones).
    Each tower is opened when first needed: a query never opens the image tower, indexing never the text one."""

    device = "cpu"

    def __init__(self, folder: Path, identity: ModelIdentity, precision: str = "fp32") -> None:
        """`identity` names the model; its output size is the folder's own."""
        self.folder, self.precision = folder, precision
        self.settings = FolderConfig.read(folder)
        self.identity = replace(identity, dim=self.settings.dim)
        self.notes: list[str] = []
        self._text: TextTower | None = None
        self._image: ImageTower | None = None
        self._preprocess: ImagePreprocess | None = None
        self._threads = 0  # ONNX Runtime's own choice: one per core

    @property
    def text(self) -> TextTower:
        if self._text is None:
            if not (self.folder / TEXT_DIR / MODEL_FILE).is_file():
                raise ClipdexError(f"the model folder {self.folder} has no text tower (textual/model.onnx)")
            self._text = TextTower(self.folder, self.settings, self._threads, optimised_path(self.identity, TEXT_DIR))
        return self._text

    @property
    def image(self) -> ImageTower:
        return self._open_image(True)

    def _open_image(self, prepack: bool) -> ImageTower:
        if self._image is None:
            if not (self.folder / IMAGE_DIR / MODEL_FILE).is_file():
                raise ClipdexError(f"the model folder {self.folder} has no image tower (visual/model.onnx)")
            tower = ImageTower(self.folder, self.settings, prepack, self._threads,
                               optimised_path(self.identity, IMAGE_DIR))
            if tower.side is not None and tower.side != self.preprocess.size:
                raise ClipdexError(f"the model folder's {PREPROCESS_FILE} says size {self.preprocess.size}, its image "
                                   f"tower takes {tower.side}×{tower.side}: the folder is inconsistent: {self.folder}")
            self._image = tower
        return self._image

    @property
    def preprocess(self) -> ImagePreprocess:
        if self._preprocess is None:
            self._preprocess = read_preprocess(self.folder)
        return self._preprocess

    @property
    def tokenizer(self):
        return self.text.tokenizer

    @property
    def context_length(self) -> int:
        return self.text.context_length

    @property
    def logit_scale(self) -> float:
        return self.settings.logit_scale

    @property
    def image_size(self) -> int:
        return self.preprocess.size

    def count_tokens(self, text: str) -> int:
        return self.text.count_tokens(text)

    def load_runtime(self) -> None:
        """Import ONNX Runtime now, where a Ctrl-C lands as an interrupt: arriving inside its import it would end
        the command as an ImportError."""
        import onnxruntime  # noqa: F401

    def use_threads(self, threads: int) -> None:
        """Towers opened from now on run on this many threads (one process among several on a machine)."""
        self._threads = threads

    def ready_for_images(self, images: int | None = None) -> None:
        """Open the image tower now, for about `images` images: without weight prepacking when they are few
        (ViT-B-32's opens 0.2–0.4 s sooner, a batch runs 2–4 % slower: a few hundred images break even)."""
        self._open_image(images is None or images >= config.PREPACK_FROM_IMAGES)

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        return self.image.encode_pixels(pixels)

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.encode_pixels(self.preprocess.batch([self.preprocess.pixels(im) for im in images]))

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self.text.encode_texts(list(texts))

    @property
    def needs_language(self) -> bool:
        return self.settings.nllb

    def read_in(self, language: str | None) -> None:
        if self.settings.nllb:
            self.text.read_in(language)
