"""ONNX files clipdex makes from a model (its image and text towers, so everyday commands run without torch):
where they live, how they are exported, what they say about themselves, how they are opened.

Each file records inside itself (ONNX metadata) which model it was exported from, so a file and its description
can never drift apart; whether a file holds a given model is remembered by the file's stamp, so an unchanged
export is not opened just to be recognised.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Iterable

from clipdex.retrieval import config
from clipdex.retrieval.digest import remembered
from clipdex.retrieval.identity import ModelIdentity

_DESCRIBED = ("clipdex_tower", "clipdex_name", "clipdex_fingerprint", "clipdex_dim")


def export_file(identity: ModelIdentity, folder: str, tag: str) -> Path:
    """The cache file of export `tag` (its format version included) for this model, under `folder`."""
    key = hashlib.sha256(f"{identity.name}\n{identity.fingerprint}\n{tag}".encode()).hexdigest()[:24]
    return config.default_cache_dir() / folder / f"{key}.onnx"


def description(tower: str, identity: ModelIdentity, **more: str) -> dict[str, str]:
    """What an export of `tower` ("text" or "image") of this model says about itself."""
    return {"clipdex_tower": tower, "clipdex_name": identity.name, "clipdex_fingerprint": identity.fingerprint,
            "clipdex_dim": str(identity.dim), **more}


def describes(metadata: dict[str, str], tower: str, identity: ModelIdentity) -> bool:
    return [metadata.get(k) for k in _DESCRIBED] == json.loads(_model_key(tower, identity))


def holds(path: Path, tower: str, identity: ModelIdentity) -> bool:
    """Whether the export at `path` says it holds `tower` of `identity`'s model (opened only when its stamp
    changed)."""
    return path.is_file() and remembered(path, _described_model, config.EXPORTS_FILE) == _model_key(tower, identity)


def remember_holds(path: Path, tower: str, identity: ModelIdentity) -> None:
    """Record that `path`, just written and checked, holds `tower` of `identity`'s model."""
    remembered(path, lambda _: _model_key(tower, identity), config.EXPORTS_FILE)


def _model_key(tower: str, identity: ModelIdentity) -> str:
    return json.dumps([tower, identity.name, identity.fingerprint, str(identity.dim)])


def _described_model(path: Path) -> str:
    """The model an export says it holds ("" when it cannot be read): loading it takes ~0.8 s for ViT-B-32."""
    try:
        metadata = session(path).get_modelmeta().custom_metadata_map
    except Exception:
        return ""
    return json.dumps([metadata.get(k) for k in _DESCRIBED])


def session(path: Path, save_optimised: Path | None = None):
    """An ONNX Runtime session. Exports are saved already optimised (portable fusions only), so later sessions
    load them as they are: ~0.04 s for ViT-B-32's int8 text tower instead of ~0.5 s optimising fp32 each time."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    if save_optimised is not None:
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(save_optimised)
    else:
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def export_graph(module, example, target: Path, input_name: str, dynamic_axes: dict) -> None:
    """Trace `module` (unit vectors out) into an ONNX file at `target`; `dynamic_axes` maps an input axis to its
    torch.export.Dim."""
    import torch

    with torch.inference_mode(False), torch.no_grad():
        torch.onnx.export(
            module.eval(), (example,), str(target), dynamo=True, input_names=[input_name], output_names=["vectors"],
            dynamic_shapes={input_name: dynamic_axes}, opset_version=config.EXPORT_OPSET, external_data=False,
            verbose=False,
        )


def temporary_files(path: Path, *parts: str) -> dict[str, Path]:
    """Names beside `path` for the steps of one export, private to this process."""
    return {part: path.with_name(f"{path.stem}.{os.getpid()}.{part}.tmp.onnx") for part in parts}


def save_checked(chosen: Path, optimised: Path, path: Path, tower: str, identity: ModelIdentity) -> None:
    """Optimise the export that passed its checks (into the temporary `optimised`), move it into place and
    remember what it holds: later sessions load it as it is."""
    session(chosen, save_optimised=optimised)
    os.replace(optimised, path)
    remember_holds(path, tower, identity)


def write_description(path: Path, described: dict[str, str]) -> None:
    """Record in the ONNX file itself which model it was exported from."""
    import onnx

    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, described)
    onnx.save(model, str(path))


def quantise_int8(source: Path, target: Path, described: dict[str, str]) -> None:
    """int8 weights, per channel; activations are quantised per call (dynamic quantisation: no calibration set)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True)
    write_description(target, described)


def remove_quietly(paths: Iterable[Path]) -> None:
    """Delete an export's temporary files, if there are any (even when their folder could not be made)."""
    for path in paths:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
