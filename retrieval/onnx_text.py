"""The text tower exported to ONNX, so a text query in a new process needs neither torch nor open_clip.

Importing torch, open_clip and torchvision and building a model costs seconds before a one-line query can be
embedded; ONNX Runtime with the torch-free tokenizer starts in a fraction of that. The export is made once per
model (in the user cache folder, keyed by the model's identity) when a library is built or re-embedded, and it
is kept only if it reproduces torch's vectors; anything it cannot serve falls back to the torch encoder.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipdex.retrieval import config
from clipdex.retrieval.digest import remembered
from clipdex.retrieval.identity import ModelIdentity
from clipdex.retrieval.tokenizer import BpeTokenizer, default_merges_file

PROBE_TEXTS = (
    "a photo of a dog running on a beach at sunset",
    "two red circles",
    "snow",
    "Ünïcödé, punctuation & numbers: 1234!",
    " ".join(["a very long query that runs past the context"] * 12),
)


def export_path(identity: ModelIdentity) -> Path:
    """The model file for this model in the cache folder. What it was exported from is written inside it (ONNX
    metadata), so the file and its description can never drift apart: both are replaced in one rename."""
    key = hashlib.sha256(f"{identity.name}\n{identity.fingerprint}".encode()).hexdigest()[:24]
    return config.default_cache_dir() / "text-towers" / f"{key}.onnx"


def _description(identity: ModelIdentity, context_length: int) -> dict[str, str]:
    return {"clipdex_name": identity.name, "clipdex_fingerprint": identity.fingerprint,
            "clipdex_dim": str(identity.dim), "clipdex_context_length": str(context_length)}


def _describes(metadata: dict[str, str], identity: ModelIdentity) -> bool:
    return (metadata.get("clipdex_name"), metadata.get("clipdex_fingerprint"), metadata.get("clipdex_dim")) == (
        identity.name, identity.fingerprint, str(identity.dim)
    )


def _model_key(identity: ModelIdentity) -> str:
    return json.dumps([identity.name, identity.fingerprint, str(identity.dim)])


def _described_model(path: Path) -> str:
    """The model an export says it holds ("" when it cannot be read): loading it takes ~0.8 s for ViT-B-32, so
    the answer is remembered by the file's stamp (digest.remembered) and an unchanged export is not opened again."""
    try:
        metadata = _session(path).get_modelmeta().custom_metadata_map
    except Exception:
        return ""
    return json.dumps([metadata.get(k) for k in ("clipdex_name", "clipdex_fingerprint", "clipdex_dim")])


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


def export_text_tower(encoder) -> ExportResult:
    """Export (or reuse) the ONNX text tower for `encoder`'s model and check it against torch."""
    import torch

    path = export_path(encoder.identity)
    if path.is_file() and remembered(path, _described_model, config.EXPORTS_FILE) == _model_key(encoder.identity):
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

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.onnx")
    example = torch.from_numpy(tokenizer(["a photo of a dog", "snow"])).to(encoder.device)
    batch = torch.export.Dim("batch", min=1, max=4096)
    length = torch.export.Dim("length", min=2, max=encoder.context_length)
    was = encoder.precision
    encoder.set_precision("fp32")
    try:
        with torch.inference_mode(False), torch.no_grad():
            torch.onnx.export(
                TextTower().eval(), (example,), str(tmp), dynamo=True, input_names=["tokens"],
                output_names=["vectors"], dynamic_shapes={"tokens": {0: batch, 1: length}},
                opset_version=config.TEXT_EXPORT_OPSET, external_data=False, verbose=False,
            )
        _write_description(tmp, _description(encoder.identity, encoder.context_length))
        reference = encoder.encode_texts(list(PROBE_TEXTS))
        exported = OnnxTextEncoder(_session(tmp), encoder.identity, tokenizer).encode_texts(list(PROBE_TEXTS))
        worst = float((reference * exported).sum(axis=1).min())
        if worst < config.TEXT_EXPORT_MIN_COSINE:
            return ExportResult(None, f"text queries will load torch: the export matched only to cosine {worst:.5f}")
        os.replace(tmp, path)
        remembered(path, lambda _: _model_key(encoder.identity), config.EXPORTS_FILE)  # checked just now
    except Exception as exc:  # an exporter failure must never fail indexing: queries still work through torch
        return ExportResult(None, f"text queries will load torch: the ONNX export failed ({type(exc).__name__})")
    finally:  # also on Ctrl-C: no half-written file is left in the cache
        tmp.unlink(missing_ok=True)
        encoder.set_precision(was)
    return ExportResult(path, f"exported the text tower for fast queries (cosine to torch ≥ {worst:.5f})")


def _session(path: Path):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _write_description(path: Path, description: dict[str, str]) -> None:
    """Record in the ONNX file itself which model it was exported from."""
    import onnx

    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, description)
    onnx.save(model, str(path))


class OnnxTextEncoder:
    """Text → unit vectors through ONNX Runtime; the same answers as the torch encoder's encode_texts."""

    def __init__(self, session, identity: ModelIdentity, tokenizer: BpeTokenizer) -> None:
        self.session = session
        self.identity = identity
        self.tokenizer = tokenizer
        self.context_length = tokenizer.context_length
        self.notes: list[str] = []

    @classmethod
    def for_model(cls, identity: ModelIdentity) -> "OnnxTextEncoder | None":
        """The export for exactly this model, as the file itself says, or None when there is none to trust (then
        torch answers)."""
        path, merges = export_path(identity), default_merges_file()
        if merges is None or not path.is_file():
            return None
        try:
            session = _session(path)
            metadata = session.get_modelmeta().custom_metadata_map
            if not _describes(metadata, identity):
                return None
            return cls(session, identity, BpeTokenizer(merges, int(metadata["clipdex_context_length"])))
        except Exception:  # no onnxruntime, or a damaged file: not worth failing a query over
            return None

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        vectors = self.session.run(None, {"tokens": self.tokenizer(texts)})[0]
        return vectors.astype(np.float32, copy=False)
