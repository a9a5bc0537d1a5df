"""ONNX Runtime, the one runtime model folders run on: opening a tower's session (kept optimised in the user
cache when its folder was not saved so), checking what it takes and gives, running a batch through it.

A tower that disagrees with its folder (other inputs, another batch size, vectors of another shape, NaN) is
said in one line, before any of its output can be stored.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from clipdex.retrieval import config
from clipdex.retrieval.digest import leftover_name, ours_alone, remove_abandoned
from clipdex.retrieval.errors import ClipdexError, first_line
from clipdex.retrieval.models.identity import ModelIdentity

MODEL_FILE = "model.onnx"


def session(path: Path, optimised: bool, prepack: bool = True, threads: int = 0, keep_as: Path | None = None):
    """An ONNX Runtime session on the CPU: a graph clipdex saved optimised is loaded as it is (≈ 0.04 s for
    ViT-B-32's text tower instead of ≈ 0.5 s optimising each time); any other is optimised as it loads, and with
    `keep_as` (a file in the user cache) that optimised graph is kept there the first time and loaded from there
    after: a folder from the hub opens as fast as one clipdex prepared.
    Without `prepack` the weights are used as stored: the session opens 30–90 ms sooner (ViT-B-32's text tower),
    one query runs as fast, a batch of 64 captions 10 % slower — the text tower's trade, a query being its job."""
    import onnxruntime

    if not optimised and keep_as is not None and ours_alone(keep_as):
        try:
            return session(keep_as, True, prepack, threads)
        except ClipdexError:
            shutil.rmtree(keep_as.parent, ignore_errors=True)  # damaged: made again below
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads  # 0: as many as the machine has cores
    if not prepack:
        options.add_session_config_entry("session.disable_prepacking", "1")
    options.graph_optimization_level = (
        onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL if optimised
        else onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    )
    writing = None
    if not optimised and keep_as is not None:
        try:
            keep_as.parent.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            remove_abandoned(keep_as.parent.parent)
            writing = Path(tempfile.mkdtemp(prefix=leftover_name(""), dir=keep_as.parent.parent))
            options.optimized_model_filepath = str(writing / keep_as.name)
            options.add_session_config_entry("session.optimized_model_external_initializers_file_name",
                                             keep_as.name + ".data")
            options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes",
                                             "1024")
        except OSError:  # a cache that cannot be written: optimised as it loads, every time
            writing = None
    try:
        opened = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        if writing is not None:
            shutil.rmtree(keep_as.parent, ignore_errors=True)
            os.replace(writing, keep_as.parent)
        return opened
    except OSError:
        return opened  # (kept or not, the session is good)
    except Exception as exc:
        raise ClipdexError(f"cannot open {path} as an ONNX model ({type(exc).__name__}: {first_line(exc, 160)})") from None
    finally:
        if writing is not None:
            shutil.rmtree(writing, ignore_errors=True)


def optimised_path(identity: ModelIdentity, tower: str) -> Path | None:
    """Where a folder's tower is kept optimised for this ONNX Runtime, or None for a model known by no content
    hash (nothing would tell a changed folder from the one optimised)."""
    import onnxruntime

    if not identity.fingerprint.startswith("files:"):
        return None
    key = hashlib.sha256(f"{identity.fingerprint}\n{tower}\n{onnxruntime.__version__}".encode()).hexdigest()[:24]
    return config.default_cache_dir() / "optimised" / key / MODEL_FILE


def fixed_size(dim) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


def unit_rows(vectors: np.ndarray, what: str, rows: int, dim: int) -> np.ndarray:
    """float32 unit rows, one of the folder's size per input; a tower that gives anything else (another shape,
    non-finite numbers) disagrees with its config or is damaged, and its output is never stored."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.shape != (rows, dim):
        raise ClipdexError(f"the model's {what} tower gave vectors of shape {tuple(vectors.shape)} for {rows} inputs, "
                           f"not ({rows}, {dim}) as its config.json's embed_dim says: the folder is inconsistent")
    if not np.isfinite(vectors).all():
        raise ClipdexError(f"the model's {what} tower gave non-finite numbers: its files are damaged; prepare or "
                           f"download the model again")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, np.float32(1e-12))


def check_inputs(path: Path, inputs, count: int, rank: int) -> None:
    """A tower takes what clipdex feeds it (ids, and a mask for M-CLIP exports; or pixels), in batches of any
    size or of exactly 1; else it is refused when opened, in one line."""
    if len(inputs) != count:
        names = ", ".join(i.name for i in inputs)
        raise ClipdexError(f"{path} takes the inputs {names}: clipdex feeds a tower "
                           f"{'ids (and an attention_mask)' if rank == 2 else 'pixels'} alone")
    shape = inputs[0].shape
    if len(shape) != rank:
        raise ClipdexError(f"{path} takes a {len(shape)}-dimensional input, not {rank} as a model folder's tower does")
    if fixed_size(shape[0]) not in (None, 1):
        raise ClipdexError(f"{path} takes batches of exactly {shape[0]}: clipdex feeds batches of any size, or of 1")


def run_fitted(tower, name: str, batch: np.ndarray, fixed_batch: int | None, extra: dict | None = None) -> np.ndarray:
    """Run `batch` through a tower, one row at a time when its batch is fixed to 1; a tower that fails on what
    its own folder says to feed it is inconsistent, said in one line."""
    try:
        if fixed_batch == 1 and len(batch) != 1:
            return np.concatenate([tower.run(None, {name: batch[i : i + 1]})[0] for i in range(len(batch))])
        return tower.run(None, {name: batch, **(extra or {})})[0]
    except Exception as exc:
        raise ClipdexError(f"the model's tower failed on the input its folder asks for ({type(exc).__name__}: "
                           f"{first_line(exc, 160)}): the folder is inconsistent or damaged") from None
