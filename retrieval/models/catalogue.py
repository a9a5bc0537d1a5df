"""The model folders clipdex recommends: what each is, what it costs to fetch, how good it is and which languages
it reads, so `clipdex models` can say it and `--model NAME` can name it.

Every entry is an ONNX export Immich publishes on the Hugging Face hub in the folder layout clipdex runs
(model_folder.py). Quality is as published (open_clip's result tables, Immich's XM3600 table, the SigLIP 2
README); speed is the architecture's, measured on this project's CI machine by `bench/model_speed.py` with random
weights (the real ones cannot be fetched there), so it holds for any weights of that shape.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

# ISO 639-1 codes the multilingual towers were trained on that people ask for most (XLM-R reads about 100
# languages, NLLB 200: each keeps its FLORES-200 code in languages.py).
_MANY = (
    "ar", "bg", "bn", "ca", "cs", "da", "de", "el", "en", "es", "et", "fa", "fi", "fr", "he", "hi", "hr", "hu", "id",
    "it", "ja", "ko", "lt", "lv", "ms", "nl", "no", "pl", "pt", "ro", "ru", "sk", "sl", "sr", "sv", "sw", "ta", "th",
    "tr", "uk", "ur", "vi", "zh",
)


@dataclass(frozen=True)
class CatalogueEntry:
    """One recommended model folder."""

    name: str  # what a user types: --model NAME, clipdex models pull NAME
    hub_id: str  # ORG/NAME on the hub
    revision: str | None  # the commit pinned here; None: the commit the hub serves first, then kept by the library
    size_mb: int  # what a first fetch downloads (config, both towers, tokenizer files), as the hub lists them
    languages: tuple[str, ...]  # ISO 639-1 codes of the queries it reads well
    architecture: str  # open_clip's name: what the speed figures are for
    quality: dict = field(default_factory=dict)  # benchmark name -> recall@1 or accuracy, in percent
    quality_source: str = ""
    images_per_second: float | None = None  # image tower, fp32, this machine (bench/model_speed.py)
    query_ms: float | None = None  # one short text query through the text tower, fp32, this machine
    note: str = ""
    default: bool = False

    def label(self) -> str:
        """How a person is told which model this is: "the default model ViT-B-32 (laion2b)"."""
        short = self.hub_id.split("/")[-1].replace("__", " (", 1)
        short = short + ")" if "(" in short else short
        return f"{'the default model ' if self.default else ''}{short}"

    @property
    def multilingual(self) -> bool:
        return len(self.languages) > 1

    def as_json(self) -> dict:
        values = asdict(self)
        values["languages"] = list(self.languages)
        return values


DEFAULT_NAME = "default"  # --model default: the entry marked default, whatever it is in this release

ENTRIES: tuple[CatalogueEntry, ...] = (
    CatalogueEntry(
        "vit-b-32-laion2b", "immich-app/ViT-B-32__laion2b-s34b-b79k", "19a057a0fb927cf239541300e74237cd56c7ffe2",
        606, ("en",), "ViT-B-32",
        {"ImageNet-1k": 66.6, "Flickr30k T→I R@1": 66.8, "COCO T→I R@1": 39.3, "XM3600 en": 68.8},
        "open_clip results tables; Immich's XM3600 table", 37.4, None,
        "open_clip's default weights: the best English model of this size", default=True,
    ),
    CatalogueEntry(
        "vit-b-32-openai", "immich-app/ViT-B-32__openai", None, 606, ("en",), "ViT-B-32",
        {"ImageNet-1k": 63.3, "Flickr30k T→I R@1": 58.8, "COCO T→I R@1": 30.4, "XM3600 en": 59.4},
        "the CLIP paper; Immich's XM3600 table", 37.4, None, "OpenAI's CLIP: Immich's server default",
    ),
    CatalogueEntry(
        "vit-b-16-siglip2", "immich-app/ViT-B-16-SigLIP2__webli", None, 1530, ("en",), "ViT-B-16-SigLIP2",
        {"ImageNet-1k": 78.2, "COCO T→I R@1": 52.1, "XM3600 en": 75.2}, "SigLIP 2 README; Immich's XM3600 table",
        None, None, "the best English quality here; its 256k-token text tower needs about 3 GB of memory",
    ),
    CatalogueEntry(
        "vit-b-32-siglip2-256", "immich-app/ViT-B-32-SigLIP2-256__webli", None, 1510, ("en",), "ViT-B-32-SigLIP2-256",
        {"ImageNet-1k": 74.0, "COCO T→I R@1": 47.2, "XM3600 en": 73.2}, "SigLIP 2 README; Immich's XM3600 table",
        None, None, "SigLIP 2 at ViT-B-32's image cost; the text tower needs about 3 GB of memory",
    ),
    CatalogueEntry(
        "xlm-roberta-base-vit-b-32", "immich-app/XLM-Roberta-Base-ViT-B-32__laion5b_s13b_b90k", None, 1470, _MANY,
        "xlm-roberta-base-ViT-B-32",
        {"ImageNet-1k": 62.4, "Flickr30k T→I R@1": 64.5, "COCO T→I R@1": 37.8, "XM3600 en": 68.3},
        "open_clip results tables; Immich's XM3600 table", 37.4, None,
        "multilingual (about 100 languages): queries in German, Chinese, Arabic… find the same photos",
    ),
    CatalogueEntry(
        "nllb-clip-base-siglip", "immich-app/nllb-clip-base-siglip__v1", None, 1980, _MANY, "nllb-clip-base-siglip",
        {"ImageNet-1k": 39.1, "Flickr30k T→I R@1": 69.2, "COCO T→I R@1": 43.2, "XM3600 en": 68.4},
        "open_clip results tables; Immich's XM3600 table", None, None,
        "multilingual (200 languages): give --lang, else the locale's language is used",
    ),
)


def default_entry() -> CatalogueEntry:
    return next(entry for entry in ENTRIES if entry.default)


def find(name: str) -> CatalogueEntry | None:
    """The entry a user named: `default`, an entry's name (any case), or its hub id."""
    if name == DEFAULT_NAME:
        return default_entry()
    wanted = name.lower()
    return next((e for e in ENTRIES if wanted in (e.name, e.hub_id.lower())), None)


def by_hub_id(hub_id: str) -> CatalogueEntry | None:
    return next((e for e in ENTRIES if e.hub_id.lower() == hub_id.lower()), None)
