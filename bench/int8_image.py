"""Would an int8 image tower pay? ONNX Runtime dynamic int8 against torch fp32 and bf16, measured here.

    python bench/int8_image.py [--model ViT-B-32] [--batch-size 32] [--json]

Speed: images/s of the image tower alone at the batch size indexing uses (torch fp32, torch bf16 weights, ONNX
Runtime fp32, ONNX Runtime int8 with per-channel weights), and the min cosine of int8 to torch fp32 on sample
photos. Accuracy: the bundled sample model's held-out R@1 (the 200 photos the demo scores) with its image tower in
fp32 and in int8 (text through torch fp32 both times). clipdex offers `--precision int8` only if int8 is ≥ 1.5×
fp32 here, keeps R@1 within 0.02 and cosine ≥ 0.99 on ViT-B-32. The last line is one JSON object (--json).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from clipdex.retrieval import config  # noqa: E402
from clipdex.retrieval.evaluate import recall_at_k  # noqa: E402
from clipdex.retrieval.factory import load_encoder  # noqa: E402
from clipdex.retrieval.images import open_image  # noqa: E402


def export_image_tower(encoder, folder: Path) -> tuple[Path, Path]:
    """fp32 and int8 ONNX files of the image tower (normalised vectors out)."""
    import onnxruntime
    from onnxruntime.quantization import QuantType, quantize_dynamic

    class ImageTower(torch.nn.Module):
        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            return encoder.model.encode_image(pixels, normalize=True)

    fp32, int8, raw = folder / "image-fp32.onnx", folder / "image-int8.onnx", folder / "image-raw.onnx"
    example = torch.rand(2, 3, encoder.image_size, encoder.image_size)
    with torch.inference_mode(False), torch.no_grad():
        torch.onnx.export(ImageTower().eval(), (example,), str(raw), dynamo=True, input_names=["pixels"],
                          output_names=["vectors"], dynamic_shapes={"pixels": {0: torch.export.Dim("batch", max=4096)}},
                          opset_version=config.TEXT_EXPORT_OPSET, external_data=False, verbose=False)
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(fp32)
    onnxruntime.InferenceSession(str(raw), options, providers=["CPUExecutionProvider"])
    quantize_dynamic(str(raw), str(int8), weight_type=QuantType.QInt8, per_channel=True)
    return fp32, int8


def session(path: Path):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def rate(embed, pixels: torch.Tensor, batches: int = 3) -> float:
    embed(pixels)
    started = time.perf_counter()
    for _ in range(batches):
        embed(pixels)
    return len(pixels) * batches / (time.perf_counter() - started)


def ort_embed(sess):
    return lambda pixels: sess.run(None, {"pixels": pixels.numpy()})[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--json", action="store_true", help="end with one JSON object of the figures")
    args = parser.parse_args()
    photos = sorted((config.SAMPLE_DATA_DIR / "images").iterdir())[: args.batch_size]
    figures: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        encoder = load_encoder(args.model, None, "cpu")
        pixels = torch.stack([encoder.preprocess(open_image(p)) for p in photos])
        fp32_file, int8_file = export_image_tower(encoder, Path(tmp))
        fp32_sess, int8_sess = session(fp32_file), session(int8_file)
        reference = encoder.encode_pixels(pixels)
        cosine = float((reference * ort_embed(int8_sess)(pixels)).sum(axis=1).min())
        rates = {"torch_fp32": rate(encoder.encode_pixels, pixels), "onnx_fp32": rate(ort_embed(fp32_sess), pixels),
                 "onnx_int8": rate(ort_embed(int8_sess), pixels)}
        encoder.set_precision("bf16")
        rates["torch_bf16"] = rate(encoder.encode_pixels, pixels)
        figures[args.model] = {**{k: round(v, 2) for k, v in rates.items()}, "int8_cosine_to_fp32": round(cosine, 5),
                               "int8_vs_torch_fp32": round(rates["onnx_int8"] / rates["torch_fp32"], 2)}
        print(f"{args.model}, random weights, batch {args.batch_size}: images/s " +
              ", ".join(f"{k} {v:.1f}" for k, v in rates.items()) + f"; int8 min cosine to fp32 {cosine:.4f}")

        sample = load_encoder("sample", None, "cpu")
        from clipdex.retrieval.pairs import read_pairs
        from clipdex.sample_data.synth import HELDOUT_SEED, heldout_scenes, write_set

        pairs = read_pairs(write_set(Path(tmp) / "heldout", heldout_scenes(), HELDOUT_SEED))
        paths = sorted({p.image for p in pairs})
        row = {path: i for i, path in enumerate(paths)}
        texts = sample.encode_texts([p.caption for p in pairs])
        images = torch.stack([sample.preprocess(open_image(p)) for p in paths])
        (Path(tmp) / "small").mkdir()
        _, small_int8 = export_image_tower(sample, Path(tmp) / "small")
        owner = [row[p.image] for p in pairs]
        r1 = {}
        for name, vectors in (("fp32", sample.encode_pixels(images)), ("int8", ort_embed(session(small_int8))(images))):
            recall = recall_at_k(vectors, texts, owner)
            r1[name] = (recall["text_to_image"]["R@1"] + recall["image_to_text"]["R@1"]) / 2
        figures["sample_heldout_mean_R@1"] = {k: round(v, 4) for k, v in r1.items()}
        print(f"sample model, held-out mean R@1: fp32 {r1['fp32']:.3f}, int8 image tower {r1['int8']:.3f}")
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
