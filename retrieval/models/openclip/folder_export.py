"""Write a model folder (model_folder.py's layout) from an open_clip model: both towers exported to ONNX with
torch, each checked against torch, saved optimised, and the tokenizer and preprocessing beside them.

This is the only module that turns torch models into folders: `prepared.prepare_folder` fills the user cache
with them (once per model and precision) so everyday commands run without torch; `clipdex export-model` writes
one wherever the user asks (the sample model in sample_data/ is made so).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from clipdex.retrieval import config
from clipdex.retrieval.digest import leftover_name
from clipdex.retrieval.errors import ClipdexError
from clipdex.retrieval.models.model_folder import (
    CONFIG_FILE, IMAGE_DIR, MODEL_FILE, OWN_SECTION, PREPROCESS_FILE, TEXT_DIR, TOKENIZER_CONFIG_FILE,
    TOKENIZER_FILE, FolderModel, clean_text, config_digest, files_checksums,
)
from clipdex.retrieval.models.preprocess import from_open_clip
from clipdex.retrieval.models.openclip.tokenizer_json import END, clip_tokenizer, save_tokenizer

PROBE_TEXTS = (
    "a photo of a dog running on a beach at sunset",
    "two red circles",
    "snow",
    "Ünïcödé, punctuation & numbers: 1234!",
    " ".join(["a very long query that runs past the context"] * 12),
)

WEIGHTS_FILE = MODEL_FILE + ".data"  # a tower's weights, beside its graph (ONNX external data)


def _merges_file(encoder) -> Path | None:
    """open_clip's merges file, when the model tokenizes as CLIP does (else its text cannot be exported)."""
    from open_clip.tokenizer import SimpleTokenizer, default_bpe, get_clean_fn

    tokenizer = encoder.tokenizer
    if not encoder.trims_text or not isinstance(tokenizer, SimpleTokenizer) or tokenizer.reduction_fn is not None:
        return None
    if tokenizer.clean_fn is not get_clean_fn("lower"):
        return None
    return Path(default_bpe())


def same_ids(ours: list[int], padded: list[int]) -> bool:
    """Whether `ours` are open_clip's ids `padded` with zeros to the context (0 is also "!": not dropped)."""
    return padded[: len(ours)] == ours and not any(padded[len(ours):])


def _worst_cosine(reference: np.ndarray, vectors: np.ndarray) -> float:
    return float((reference * vectors).sum(axis=1).min())


def _probe_captions() -> list[str]:
    """Captions of the bundled sample set: real sentences of every length to check a reduced precision on."""
    import csv

    try:
        with open(config.SAMPLE_CAPTIONS, encoding="utf-8", newline="") as f:
            return [row["caption"] for row in csv.DictReader(f)][: config.TEXT_PROBE_CAPTIONS]
    except (OSError, KeyError):
        return []


def _query_ms(run, runs: int = 15) -> float:
    """Median milliseconds of one short query (the case a person waits for)."""
    times = []
    for i in range(runs + 3):
        started = time.perf_counter()
        run([f"a photo of a dog on a beach {i}"])
        times.append(time.perf_counter() - started)
    return float(np.median(times[3:])) * 1000


def _optimise(source: Path, target: Path) -> None:
    """Save the graph ONNX Runtime makes of `source` (portable fusions only), so later sessions load it as it is,
    with its weights beside it (`model.onnx.data`), which a session maps instead of parsing: ViT-B-32's text tower
    opens in 0.02 s instead of 0.09 s, its image tower in 0.01 s instead of 0.4 s."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(target)
    options.add_session_config_entry("session.optimized_model_external_initializers_file_name", WEIGHTS_FILE)
    options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    onnxruntime.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])


def _export_graph(module, example, target: Path, input_name: str, dynamic_axes: dict) -> None:
    """Trace `module` (unit vectors out) into an ONNX file whose output is `embedding`; `dynamic_axes` maps an
    input axis to its torch.export.Dim."""
    import onnx
    import torch

    with torch.inference_mode(False), torch.no_grad():
        torch.onnx.export(
            module.eval(), (example,), str(target), dynamo=True, input_names=[input_name],
            output_names=["vectors"], dynamic_shapes={input_name: dynamic_axes}, opset_version=config.EXPORT_OPSET,
            external_data=False, verbose=False,
        )
    # The exporter names values after their ops, so a text tower already has an "embedding" (its token lookup):
    # that one is renamed first, then the output takes the name model folders give it.
    model = onnx.load(str(target))
    _rename(model.graph, "embedding", "embedding_lookup")
    _rename(model.graph, model.graph.output[0].name, "embedding")
    onnx.save(model, str(target))


def _rename(graph, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for value in [*graph.input, *graph.output, *graph.value_info, *graph.initializer]:
        if value.name == old:
            value.name = new


def _quantise_int8(source: Path, target: Path) -> None:
    """int8 weights, per channel; activations are quantised per call (dynamic quantisation: no calibration set)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True)


def _export_text(encoder, folder: Path, work: Path, precision: str) -> str:
    """textual/: tokenizer files and the text tower, checked against torch; how it was kept, for the user."""
    import torch

    merges = _merges_file(encoder)
    if merges is None:
        raise ClipdexError("its text side does not use CLIP's byte-pair tokenizer with a causal text transformer")
    from tokenizers import Tokenizer

    (folder / TEXT_DIR).mkdir(mode=0o700)
    save_tokenizer(clip_tokenizer(merges), folder / TEXT_DIR / TOKENIZER_FILE)
    tokenizer = Tokenizer.from_file(str(folder / TEXT_DIR / TOKENIZER_FILE))  # checked as the folder will hold it
    reference_ids = encoder.tokenizer(list(PROBE_TEXTS)).numpy()
    tokenizer.enable_truncation(max_length=encoder.context_length)
    for text, expected in zip(PROBE_TEXTS, reference_ids):
        if not same_ids(tokenizer.encode(clean_text(text)).ids, expected.tolist()):
            raise ClipdexError("its tokenizer gives other ids than open_clip's")
    # open_clip pads with 0 ("!"): under the causal mask, padding after the end token changes nothing.
    special = {"bos_token": "<start_of_text>", "eos_token": END, "pad_token": "!", "unk_token": END}
    (folder / TEXT_DIR / TOKENIZER_CONFIG_FILE).write_text(
        json.dumps({**special, "model_max_length": encoder.context_length}, indent=1), encoding="utf-8")
    (folder / TEXT_DIR / "special_tokens_map.json").write_text(json.dumps(special, indent=1), encoding="utf-8")

    class TextTower(torch.nn.Module):
        def forward(self, text: torch.Tensor) -> torch.Tensor:
            return encoder.text_forward(text.long())

    example = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]], dtype=torch.int32, device=encoder.device)
    batch = torch.export.Dim("batch", min=1, max=4096)
    length = torch.export.Dim("length", min=2, max=encoder.context_length)
    _export_graph(TextTower(), example, work / "text.fp32.onnx", "text", {0: batch, 1: length})
    probe = [*PROBE_TEXTS, *_probe_captions()]
    reference = encoder.encode_texts(probe)

    def tower(path: Path):
        shutil.copy(path, folder / TEXT_DIR / MODEL_FILE)
        return FolderModel(folder, encoder.identity).text

    fp32 = tower(work / "text.fp32.onnx")
    worst = _worst_cosine(reference, fp32.encode_texts(probe))
    if not worst >= config.TEXT_EXPORT_MIN_COSINE:
        raise ClipdexError(f"its text tower matched torch only to cosine {worst:.5f}")
    chosen, how = work / "text.fp32.onnx", f"text fp32, cosine to torch ≥ {worst:.5f}"
    if precision != "fp32":
        _quantise_int8(work / "text.fp32.onnx", work / "text.int8.onnx")
        int8 = tower(work / "text.int8.onnx")
        agreement = _worst_cosine(reference, int8.encode_texts(probe))
        speedup = _query_ms(fp32.encode_texts) / _query_ms(int8.encode_texts)
        if agreement >= config.TEXT_INT8_MIN_COSINE and (precision == "int8" or speedup >= config.TEXT_INT8_MIN_SPEEDUP):
            chosen, how = work / "text.int8.onnx", f"text int8, cosine to torch's fp32 ≥ {agreement:.4f}, {speedup:.1f}× fp32's speed"
    _optimise(chosen, folder / TEXT_DIR / MODEL_FILE)
    return how


def _export_image(encoder, folder: Path, work: Path, precision: str) -> str:
    """visual/: the image tower in `precision` and its preprocessing, checked against torch's fp32 vectors."""
    import torch

    preprocess = from_open_clip(encoder.model)
    if preprocess is None:
        raise ClipdexError("its image preprocessing is not one clipdex reproduces without torch")
    model = encoder.model

    class ImageTower(torch.nn.Module):
        def forward(self, image: torch.Tensor) -> torch.Tensor:
            return model.encode_image(image, normalize=True)

    noise = np.random.default_rng(0).integers(0, 256, (6, preprocess.size, preprocess.size, 3), dtype=np.uint8)
    probe = preprocess.batch(list(noise))
    _export_graph(ImageTower(), torch.from_numpy(probe[:2]), work / "image.fp32.onnx", "image",
                  {0: torch.export.Dim("batch", max=4096)})
    chosen, least = work / "image.fp32.onnx", config.IMAGE_EXPORT_MIN_COSINE
    if precision == "int8":
        _quantise_int8(chosen, work / "image.int8.onnx")
        chosen, least = work / "image.int8.onnx", config.MIN_PRECISION_COSINE
    (folder / IMAGE_DIR).mkdir(mode=0o700)
    (folder / IMAGE_DIR / PREPROCESS_FILE).write_text(preprocess.to_json(), encoding="utf-8")
    shutil.copy(chosen, folder / IMAGE_DIR / MODEL_FILE)
    worst = _worst_cosine(encoder.encode_pixels(probe), FolderModel(folder, encoder.identity).encode_pixels(probe))
    if not worst >= least:
        raise ClipdexError(f"its {precision} image tower matched torch only to cosine {worst:.5f}")
    _optimise(chosen, folder / IMAGE_DIR / MODEL_FILE)
    return f"image {precision}, cosine to torch ≥ {worst:.5f}"


def _write_config(encoder, folder: Path, precision: str, optimised: bool, extra: dict | None = None) -> None:
    identity = encoder.identity
    own = {"name": identity.name, "pretrained": identity.pretrained, "fingerprint": identity.fingerprint,
           "precision": precision, "logit_scale": encoder.logit_scale, "optimised": optimised,
           "format": config.FOLDER_FORMAT, **(extra or {})}
    values = {"embed_dim": identity.dim, "vision_cfg": {"image_size": encoder.image_size},
              "text_cfg": {"context_length": encoder.context_length}, OWN_SECTION: own}
    own["config"] = config_digest(values)
    (folder / CONFIG_FILE).write_text(json.dumps(values, indent=1), encoding="utf-8")


def write_folder(encoder, folder: Path, precision: str = "fp32", text_precision: str = "auto",
                 shared: bool = False) -> list[str]:
    """Export `encoder` into the empty `folder` (made here); what was kept, for the user. Raises ClipdexError
    when the model cannot run as a folder (then torch runs it, with the reason as a note). A `shared` folder
    (one the user asked for, not the cache's) names its source weights by file name, not where they lie."""
    folder.mkdir(mode=0o700)
    was = encoder.precision
    encoder.set_precision("fp32")
    try:
        with tempfile.TemporaryDirectory(prefix=leftover_name("export-"), dir=folder.parent) as work:
            _write_config(encoder, folder, precision, optimised=True)
            text = _export_text(encoder, folder, Path(work), text_precision if precision == "fp32" else "auto")
            image = _export_image(encoder, folder, Path(work), precision)
    except ClipdexError:
        raise
    except Exception as exc:  # an exporter's failure, an unwritable cache: torch still embeds
        if shutil.disk_usage(folder.parent).free < config.EXPORT_MIN_FREE_BYTES:  # the exporter's own words
            raise ClipdexError(f"its towers could not be exported: the disk holding {folder.parent} is full") from None
        raise ClipdexError(f"its towers could not be exported ({type(exc).__name__}: {str(exc)[:120]})") from None
    finally:
        encoder.set_precision(was)
    # What each file held when it was made: a damaged or replaced file is then never trusted.
    recorded = {"files": files_checksums(folder, with_config=False)}
    if shared:
        recorded["name"] = encoder.identity.describe(paths=False)
    _write_config(encoder, folder, precision, optimised=True, extra=recorded)
    if shared:  # meant to be copied and run by others: readable by all, as its folders are
        for path in [folder, *folder.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
    return [text, image]


def store_weights_as_fp16(folder: Path) -> None:
    """Keep each tower's large float weights as fp16 (half the bytes), cast back to float32 as the graph loads:
    for the bundled sample model, whose weights are fp16 already (nothing is lost)."""
    import onnx
    from onnx import helper, numpy_helper

    for tower in (TEXT_DIR, IMAGE_DIR):
        path = folder / tower / MODEL_FILE
        model = onnx.load(str(path))
        casts = []
        for initializer in list(model.graph.initializer):
            values = numpy_helper.to_array(initializer)
            if values.dtype != np.float32 or values.size < 1024:
                continue
            half = numpy_helper.from_array(values.astype(np.float16), initializer.name + "__fp16")
            model.graph.initializer.remove(initializer)
            model.graph.initializer.append(half)
            casts.append(helper.make_node("Cast", [half.name], [initializer.name], to=onnx.TensorProto.FLOAT))
        for node in reversed(casts):
            model.graph.node.insert(0, node)
        onnx.save(model, str(path))  # every weight inside model.onnx again: the small folder ships as two files
        (path.parent / WEIGHTS_FILE).unlink(missing_ok=True)
    config_path = folder / CONFIG_FILE
    values = json.loads(config_path.read_text(encoding="utf-8"))
    values[OWN_SECTION]["optimised"] = False  # the casts are folded away when a session loads it
    values[OWN_SECTION]["files"] = files_checksums(folder, with_config=False)
    values[OWN_SECTION]["config"] = config_digest(values)
    config_path.write_text(json.dumps(values, indent=1), encoding="utf-8")
