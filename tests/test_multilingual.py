"""Queries in other languages through model folders whose text towers need them read as they were trained:
an XLM-RoBERTa-style folder reads any language as it is, an NLLB-style one reads a FLORES-200 code before the
sentence (from --lang, else the locale, else English), a SigLIP-style one reads the query canonicalised. The
tokenizers are trained here (unigram pieces, as both real ones are) on sentences in English, German, Chinese,
Japanese and Arabic; the towers are the sample model's."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from clipdex.retrieval import config
from clipdex.retrieval.models.identity import ModelIdentity
from clipdex.retrieval.models.model_folder import FolderModel
from tests.conftest import SAMPLE_ROWS
from tests.helpers import without_torch, search_hits

QUERIES = {"de": "ein roter Kreis", "zh": "红色的圆", "ja": "赤い丸", "ar": "دائرة حمراء", "en": "a red circle"}
CODES = {"de": "deu_Latn", "zh": "zho_Hans", "ja": "jpn_Jpan", "ar": "arb_Arab", "en": "eng_Latn"}


def _folder(target: Path, nllb: bool) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    shutil.copytree(config.SAMPLE_MODEL_FOLDER, target)
    sentences = [row["caption"] for row in SAMPLE_ROWS[:100]] + [
        "ein roter Kreis auf weißem Grund", "zwei blaue Quadrate", "红色的圆", "蓝色的正方形", "赤い丸", "青い四角形",
        "دائرة حمراء", "مربع أزرق",
    ] * 4
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    codes = sorted(CODES.values()) if nllb else []
    tokenizer.train_from_iterator(sentences, trainers.UnigramTrainer(
        vocab_size=400, special_tokens=["<s>", "<pad>", "</s>", "<unk>", *codes], unk_token="<unk>"))
    # XLM-R: <s> text </s>; NLLB: the language's code (read before the text), text, </s>
    tokenizer.post_processor = (processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 2)]) if nllb
                                else processors.TemplateProcessing(single="<s> $A </s>",
                                                                   special_tokens=[("<s>", 0), ("</s>", 2)]))
    tokenizer.save(str(target / "textual" / "tokenizer.json"))
    (target / "textual" / "tokenizer_config.json").write_text(json.dumps({"pad_token": "<pad>"}))
    values = json.loads((target / "config.json").read_text())
    values.pop("clipdex")
    name = "facebook/nllb-200-distilled-600M" if nllb else "xlm-roberta-base"
    values["text_cfg"].update(hf_model_name=name, hf_tokenizer_name=name)
    (target / "config.json").write_text(json.dumps(values))
    return target


def _model(folder: Path) -> FolderModel:
    return FolderModel(folder, ModelIdentity(str(folder), None, "files:test", 0))


@pytest.mark.parametrize("language", sorted(QUERIES))
def test_an_nllb_folder_reads_the_languages_code_before_each_query(tmp_path: Path, monkeypatch, language) -> None:
    from tokenizers import Tokenizer

    for variable in ("LC_ALL", "LC_MESSAGES", "LANG"):
        monkeypatch.delenv(variable, raising=False)
    folder = _folder(tmp_path / "nllb", nllb=True)
    reference = Tokenizer.from_file(str(folder / "textual" / "tokenizer.json"))
    model = _model(folder)
    assert model.needs_language and model.text.language == "eng_Latn"  # no locale: English
    model.read_in(CODES[language])
    [row] = model.text.ids([QUERIES[language]]).tolist()
    expected = reference.encode(CODES[language] + QUERIES[language]).ids
    assert expected[0] == reference.token_to_id(CODES[language]) and reference.token_to_id("<unk>") not in expected
    assert row[: len(expected)] == expected and set(row[len(expected):]) <= {1}


def test_the_locale_names_an_nllb_querys_language_and_lang_overrides_it(tmp_path: Path, monkeypatch) -> None:
    folder = _folder(tmp_path / "nllb", nllb=True)
    monkeypatch.setenv("LANG", "ja_JP.UTF-8")
    monkeypatch.delenv("LC_ALL", raising=False)
    monkeypatch.delenv("LC_MESSAGES", raising=False)
    assert _model(folder).text.language == "jpn_Jpan"
    monkeypatch.setenv("LANG", "C.UTF-8")
    assert _model(folder).text.language == "eng_Latn"


@pytest.mark.parametrize("language", sorted(QUERIES))
def test_an_xlm_roberta_folder_reads_every_language_as_it_is(tmp_path: Path, language) -> None:
    from tokenizers import Tokenizer

    folder = _folder(tmp_path / "xlmr", nllb=False)
    reference = Tokenizer.from_file(str(folder / "textual" / "tokenizer.json"))
    model = _model(folder)
    assert not model.needs_language
    model.read_in("deu_Latn")  # nothing to tell it
    [row] = model.text.ids([QUERIES[language]]).tolist()
    expected = reference.encode(QUERIES[language]).ids
    assert expected[0] == 0 and expected[-1] == 2 and reference.token_to_id("<unk>") not in expected
    assert row[: len(expected)] == expected


def test_a_siglip_folder_reads_the_query_canonicalised(tmp_path: Path) -> None:
    folder = shutil.copytree(config.SAMPLE_MODEL_FOLDER, tmp_path / "siglip")
    values = json.loads((folder / "config.json").read_text())
    values["text_cfg"]["tokenizer_kwargs"] = {"clean": "canonicalize"}
    (folder / "config.json").write_text(json.dumps(values))
    model = _model(folder)
    assert model.text.ids(["A  Red, CIRCLE!"]).tolist() == model.text.ids(["a red circle"]).tolist()
    assert model.text.ids(["a_red circle"]).tolist() == model.text.ids(["a red circle"]).tolist()
    plain = _model(config.SAMPLE_MODEL_FOLDER)
    assert plain.text.ids(["A Red, CIRCLE!"]).tolist() != plain.text.ids(["a red circle"]).tolist()


@pytest.mark.slow
def test_queries_in_four_languages_through_the_cli(tmp_path: Path, photos) -> None:
    pictures = photos(4)
    nllb = _folder(tmp_path / "nllb", nllb=True)
    xlmr = _folder(tmp_path / "xlmr", nllb=False)
    for folder, name in ((nllb, "nllb"), (xlmr, "xlmr")):
        library = tmp_path / f"library-{name}"
        assert without_torch("-L", library, "index", pictures, "--model", folder).returncode == 0
        for language, query in QUERIES.items():
            done = without_torch("-L", library, "search", query, "--lang", language, "--json", "--mode", "clip")
            assert done.returncode == 0 and len(search_hits(done)) == 4, done.stderr[-2000:]
            assert ("--lang is for models" in done.stderr) == (name == "xlmr")
    bad = without_torch("-L", tmp_path / "library-nllb", "search", "x", "--lang", "klingon")
    assert bad.returncode == 2 and "unknown language 'klingon'" in bad.stderr
