"""The text tower exported to ONNX, so a text query in a new process needs neither torch nor open_clip.

Importing torch, open_clip and torchvision and building a model costs seconds before a one-line query can be
embedded; ONNX Runtime with the torch-free tokenizer starts in a fraction of that. The export is made once per
model (in the user cache folder, keyed by the model's identity) when a library is built or re-embedded, and it
is kept only if it reproduces torch's vectors; anything it cannot serve falls back to the torch encoder.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipdex.retrieval import config
from clipdex.retrieval.identity import ModelIdentity
from clipdex.retrieval.onnx_files import (
    describes, description, export_file, export_graph, holds, quantise_int8, remove_quietly, save_checked, session,
    temporary_files, write_description,
)
from clipdex.retrieval.tokenizer import BpeTokenizer, default_merges_file

PROBE_TEXTS = (
    "a photo of a dog running on a beach at sunset",
    "two red circles",
    "snow",
    "Ünïcödé, punctuation & numbers: 1234!",
    " ".join(["a very long query that runs past the context"] * 12),
)


def export_path(identity: ModelIdentity) -> Path:
    """The text tower's file for this model in the cache folder."""
    return export_file(identity, "text-towers", f"text-{config.TEXT_EXPORT_FORMAT}")


@dataclass
class ExportResult:
    path: Path | None
    note: str  # for the user: exported, or why not ("" when an earlier export was reused)


def _can_export(encoder) -> str | None:
    """Why this model's text side cannot run without torch, or None when it can."""
    from open_clip.tokenizer import SimpleTokenizer, get_clean_fn

    tokenizer = encoder.tokenizer
    if not encoder.trims_text:
        return "its text tower is not a causal open_clip text transformer"
    if not isinstance(tokenizer, SimpleTokenizer) or tokenizer.reduction_fn is not None:
        return "it does not use CLIP's byte-pair tokenizer"
    if tokenizer.clean_fn is not get_clean_fn("lower") or default_merges_file() is None:
        return "its tokenizer settings differ from CLIP's defaults"
    return None


def export_text_tower(encoder, precision: str = "auto") -> ExportResult:
    """Export (or reuse) the ONNX text tower for `encoder`'s model, checked against torch, optimised and saved.

    precision "auto" keeps an int8 tower when it agrees with torch's fp32 vectors to TEXT_INT8_MIN_COSINE on
    probe captions and is measurably faster here (it is for ViT-B-32: 3.5 ms a query against 9; not for the
    tiny test models); "fp32" never quantises; "int8" keeps int8 whenever it agrees (tests use it)."""
    import torch

    path = export_path(encoder.identity)
    if holds(path, "text", encoder.identity):
        return ExportResult(path, "")
    reason = _can_export(encoder)
    if reason:
        return ExportResult(None, f"text queries will load torch: {reason}")
    tokenizer = BpeTokenizer(default_merges_file(), encoder.context_length)
    reference_ids = encoder.tokenizer(list(PROBE_TEXTS)).numpy()
    ids = tokenizer(list(PROBE_TEXTS))
    if not (reference_ids[:, : ids.shape[1]] == ids).all():
        return ExportResult(None, "text queries will load torch: the torch-free tokenizer disagrees with open_clip's")

    class TextTower(torch.nn.Module):
        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return encoder.text_forward(tokens)

    tmp = temporary_files(path, "fp32", "int8", "saved")
    example = torch.from_numpy(tokenizer(["a photo of a dog", "snow"])).to(encoder.device)
    batch = torch.export.Dim("batch", min=1, max=4096)
    length = torch.export.Dim("length", min=2, max=encoder.context_length)
    was = encoder.precision
    encoder.set_precision("fp32")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        export_graph(TextTower(), example, tmp["fp32"], "tokens", {0: batch, 1: length})
        described = description("text", encoder.identity, clipdex_context_length=str(encoder.context_length),
                                clipdex_logit_scale=repr(encoder.logit_scale))
        write_description(tmp["fp32"], {**described, "clipdex_precision": "fp32"})
        probe = [*PROBE_TEXTS, *_probe_captions()]
        reference = encoder.encode_texts(probe)
        fp32 = OnnxTextEncoder(session(tmp["fp32"]), encoder.identity, tokenizer)
        worst = _worst_cosine(reference, fp32.encode_texts(probe))
        if worst < config.TEXT_EXPORT_MIN_COSINE:
            return ExportResult(None, f"text queries will load torch: the export matched only to cosine {worst:.5f}")
        chosen, how = tmp["fp32"], f"fp32, cosine to torch ≥ {worst:.5f}"
        if precision != "fp32":
            quantise_int8(tmp["fp32"], tmp["int8"], {**described, "clipdex_precision": "int8"})
            int8 = OnnxTextEncoder(session(tmp["int8"]), encoder.identity, tokenizer)
            agreement = _worst_cosine(reference, int8.encode_texts(probe))
            speedup = _query_ms(fp32) / _query_ms(int8)
            if agreement >= config.TEXT_INT8_MIN_COSINE and (precision == "int8" or speedup >= config.TEXT_INT8_MIN_SPEEDUP):
                chosen, how = tmp["int8"], f"int8, cosine to torch's fp32 ≥ {agreement:.4f}, {speedup:.1f}× fp32's speed"
        save_checked(chosen, tmp["saved"], path, "text", encoder.identity)  # loaded as it is by every query
    except Exception as exc:  # an export failure (or an unwritable cache) must never fail indexing: queries
        # still work through torch
        return ExportResult(None, f"text queries will load torch: the ONNX export failed ({type(exc).__name__}: "
                                  f"{str(exc)[:120]})")
    finally:  # also on Ctrl-C: no half-written file is left in the cache
        remove_quietly(tmp.values())
        encoder.set_precision(was)
    return ExportResult(path, f"exported the text tower for fast queries ({how})")


def _probe_captions() -> list[str]:
    """Captions of the bundled sample set: real sentences of every length to check a reduced precision on."""
    import csv

    try:
        with open(config.SAMPLE_CAPTIONS, encoding="utf-8", newline="") as f:
            return [row["caption"] for row in csv.DictReader(f)][: config.TEXT_PROBE_CAPTIONS]
    except (OSError, KeyError):
        return []


def _worst_cosine(reference: np.ndarray, vectors: np.ndarray) -> float:
    return float((reference * vectors).sum(axis=1).min())


def _query_ms(encoder: "OnnxTextEncoder", runs: int = 15) -> float:
    """Median milliseconds of one short query (the case a person waits for)."""
    import time

    times = []
    for i in range(runs + 3):
        started = time.perf_counter()
        encoder.encode_texts([f"a photo of a dog on a beach {i}"])
        times.append(time.perf_counter() - started)
    return float(np.median(times[3:])) * 1000


class OnnxTextEncoder:
    """Text → unit vectors through ONNX Runtime; the same answers as the torch encoder's encode_texts."""

    def __init__(self, session, identity: ModelIdentity, tokenizer: BpeTokenizer) -> None:
        self.session = session
        self.identity = identity
        self.tokenizer = tokenizer
        self.context_length = tokenizer.context_length
        self.notes: list[str] = []
        self.logit_scale = config.DEFAULT_LOGIT_SCALE  # CLIP's softmax temperature, as the export recorded it
        # People repeat and refine queries (and a page reload asks again): recent ones are answered from memory.
        self._one = functools.lru_cache(maxsize=config.QUERY_CACHE_TEXTS)(self._encode_one)

    @classmethod
    def for_model(cls, identity: ModelIdentity) -> "OnnxTextEncoder | None":
        """The export for exactly this model, as the file itself says, or None when there is none to trust (then
        torch answers)."""
        path, merges = export_path(identity), default_merges_file()
        if merges is None or not path.is_file():
            return None
        try:
            opened = session(path)
            metadata = opened.get_modelmeta().custom_metadata_map
            if not describes(metadata, "text", identity):
                return None
            found = cls(opened, identity, BpeTokenizer(merges, int(metadata["clipdex_context_length"])))
            found.logit_scale = float(metadata.get("clipdex_logit_scale", config.DEFAULT_LOGIT_SCALE))
            return found
        except Exception:  # no onnxruntime, or a damaged file: not worth failing a query over
            return None

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        if len(texts) == 1:
            return self._one(texts[0])[None, :]
        vectors = self.session.run(None, {"tokens": self.tokenizer(texts)})[0]
        return vectors.astype(np.float32, copy=False)

    def _encode_one(self, text: str) -> np.ndarray:
        vector = self.session.run(None, {"tokens": self.tokenizer([text])})[0][0].astype(np.float32)
        vector.flags.writeable = False  # shared by every later asker of the same text
        return vector
