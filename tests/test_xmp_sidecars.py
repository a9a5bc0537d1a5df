"""export-xmp: tags become dc:subject keywords in sidecars digiKam, darktable and Lightroom read; an existing
sidecar (a darktable one with its edit history) keeps everything; a second run changes no byte; originals and
anything that is not a sidecar file are never written."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from clipdex.retrieval.describe.sidecars import sidecar_path
from tests.helpers import json_output, write_dng, search_hits
from tests.test_describe_and_tags import SAMPLE

exiv2 = pytest.importorskip("exiv2") if not os.environ.get("CI") else __import__("exiv2")

DARKTABLE = """<?xml version="1.0" encoding="UTF-8"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="XMP Core 4.4.0-Exiv2">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:exif="http://ns.adobe.com/exif/1.0/"
    xmlns:xmpMM="http://ns.adobe.com/xap/1.0/mm/"
    xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmlns:darktable="http://darktable.sf.net/"
   exif:DateTimeOriginal="2024:06:30 18:00:00"
   xmpMM:DerivedFrom="IMG_0001.CR2"
   darktable:xmp_version="5"
   darktable:history_end="2">
   <darktable:history>
    <rdf:Seq>
     <rdf:li darktable:operation="exposure" darktable:enabled="1" darktable:modversion="6" darktable:params="00000000"/>
     <rdf:li darktable:operation="colorin" darktable:enabled="1" darktable:modversion="7" darktable:params="gz48eJxj"/>
    </rdf:Seq>
   </darktable:history>
   <dc:subject>
    <rdf:Bag>
     <rdf:li>holiday</rdf:li>
    </rdf:Bag>
   </dc:subject>
   <dc:description>
    <rdf:Alt>
     <rdf:li xml:lang="x-default">written by hand</rdf:li>
    </rdf:Alt>
   </dc:description>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
"""


def _properties(path: Path) -> dict[str, str]:
    opened = exiv2.ImageFactory.open(str(path))  # kept while its data is read (the binding needs it alive)
    opened.readMetadata()
    found = {datum.key(): datum.toString() for datum in opened.xmpData()}
    return found


def _keywords(path: Path) -> list[str]:
    opened = exiv2.ImageFactory.open(str(path))
    opened.readMetadata()
    value = next(d for d in opened.xmpData() if d.key() == "Xmp.dc.subject").value()
    found = [value.toString(i) for i in range(value.count())]
    return found


def test_sidecars_are_made_merged_and_left_alone_when_complete(cli, photos, shapes: Path) -> None:
    folder = photos(6)
    originals = {p.name: p.read_bytes() for p in folder.iterdir()}
    cli("index", folder, *SAMPLE, "--tags", "--vocabulary", shapes)
    hits = {Path(h["path"]).name: h["tags"] for h in search_hits(cli("search", "a shape", "-k", "6", "--json"))}
    edited = sorted(folder.iterdir())[0]
    darktable = sidecar_path(str(edited))
    darktable.write_text(DARKTABLE, encoding="utf-8")
    before = _properties(darktable)

    planned = json_output(cli("export-xmp", "--dry-run", "--json"))
    assert len(planned["changed"]) == 6 and not list(folder.glob("*.xmp"))[1:]  # nothing written but the one
    done = json_output(cli("export-xmp", "--json"))
    assert [c["keywords"] for c in done["changed"]] == [c["keywords"] for c in planned["changed"]]
    for name, tags in hits.items():
        sidecar = folder / f"{name}.xmp"
        expected = (["holiday"] if sidecar == darktable else []) + tags
        assert _keywords(sidecar) == expected, name
    after = _properties(darktable)
    kept = {k: v for k, v in after.items() if k != "Xmp.dc.subject"}
    assert kept == {k: v for k, v in before.items() if k != "Xmp.dc.subject"}  # the history, byte for byte
    assert after["Xmp.darktable.history[2]/darktable:params"] == "gz48eJxj"
    assert after["Xmp.dc.description"] == 'lang="x-default" written by hand'

    written = {p.name: p.read_bytes() for p in folder.glob("*.xmp")}
    again = json_output(cli("export-xmp", "--json"))
    assert again == {"changed": [], "unchanged": 6, "failed": []}
    assert {p.name: p.read_bytes() for p in folder.glob("*.xmp")} == written  # a re-run changes no byte
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.suffix != ".xmp"} == originals  # never touched


def test_what_is_not_a_sidecar_is_refused(cli, photos, shapes: Path, tmp_path: Path) -> None:
    folder = photos(3)
    cli("index", folder, *SAMPLE, "--tags", "--vocabulary", shapes)
    first, second, third = sorted(folder.iterdir())
    target = tmp_path / "elsewhere.txt"
    target.write_text("not yours")
    sidecar_path(str(first)).symlink_to(target)  # a link planted where the sidecar goes
    sidecar_path(str(second)).write_bytes(third.read_bytes())  # an image under a sidecar's name
    result = cli("export-xmp")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "not a regular file" in result.output and "not well-formed XML" in result.output  # an image is not XML
    assert target.read_text() == "not yours" and sidecar_path(str(second)).read_bytes() == third.read_bytes()
    assert _keywords(sidecar_path(str(third)))  # the third was written


def test_recognised_text_is_a_description_only_when_asked(cli, photos, shapes: Path) -> None:
    from clipdex.retrieval.library import Library

    folder = photos(2)
    cli("index", folder, *SAMPLE, "--tags", "--vocabulary", shapes)
    library = Library(folder.parent / "library")
    item_id = next(i for i, row in library.store.items(range(1, 10)).items() if row["kind"] == "image")
    library.store.set_ocr([(item_id, library.store.items([item_id])[item_id]["sha256"], 'INVOICE 4711\n"Corner" <b>')])
    path = Path(library.store.items([item_id])[item_id]["key"])
    cli("export-xmp")
    assert "Xmp.dc.description" not in _properties(sidecar_path(str(path)))
    assert json.loads(cli("export-xmp", "--text", "--json").stdout)["changed"][0]["description"] is True
    assert _properties(sidecar_path(str(path)))["Xmp.dc.description"] == 'lang="x-default" INVOICE 4711\n"Corner" <b>'


def test_lightroom_names_a_raw_file_s_sidecar_without_its_extension() -> None:
    assert sidecar_path("/p/IMG_1.CR2") == Path("/p/IMG_1.CR2.xmp")
    assert sidecar_path("/p/IMG_1.CR2", lightroom=True) == Path("/p/IMG_1.xmp")
    assert sidecar_path("/p/a.jpg", lightroom=True) == Path("/p/a.jpg.xmp")  # Lightroom keeps JPEG metadata inside


def test_a_sidecar_exiv2_would_read_as_empty_is_left_alone(cli, photos, shapes: Path) -> None:
    """One character XML forbids (a Latin-1 byte, a control) makes Exiv2 read a sidecar as empty: writing it back
    would drop a darktable history. Such a sidecar, a read-only one, and a path not there are refused."""
    folder = photos(3)
    cli("index", folder, *SAMPLE, "--tags", "--vocabulary", shapes)
    first, second, _ = sorted(folder.iterdir())
    broken = DARKTABLE.replace("holiday", "Caf\udce9").encode("utf-8", "surrogateescape")  # a lone Latin-1 byte
    sidecar_path(str(first)).write_bytes(broken)
    sidecar_path(str(second)).write_text(DARKTABLE, encoding="utf-8")
    sidecar_path(str(second)).chmod(0o444)
    result = cli("export-xmp")
    assert result.exit_code == 1 and "not well-formed XML" in result.output and "read-only" in result.output
    assert sidecar_path(str(first)).read_bytes() == broken
    assert sidecar_path(str(second)).read_text(encoding="utf-8") == DARKTABLE
    missing = cli("export-xmp", folder / "not-here")
    assert missing.exit_code == 1 and "no such file or folder" in missing.output


# Well-formed XMP that Exiv2's XMP Toolkit cannot read (error 203): each is read as empty.
_UNREADABLE = {
    "twice": DARKTABLE.replace('darktable:history_end="2">', 'darktable:history_end="2">\n   <exif:DateTimeOriginal>'
                               '2024:06:30 18:00:00</exif:DateTimeOriginal>'),
    "literal": DARKTABLE.replace("<dc:description>", '<dc:description rdf:parseType="Literal">'),
    "stray-text": DARKTABLE.replace("<darktable:history>", "stray words\n   <darktable:history>"),
}


@pytest.mark.parametrize("case", sorted(_UNREADABLE))
def test_a_well_formed_sidecar_exiv2_cannot_read_is_left_alone(cli, photos, shapes: Path, case: str) -> None:
    folder = photos(1)
    cli("index", folder, *SAMPLE, "--tags", "--vocabulary", shapes)
    photo = next(folder.iterdir())
    sidecar = sidecar_path(str(photo))
    sidecar.write_text(_UNREADABLE[case], encoding="utf-8")
    for dry in ((), ("--dry-run",)):
        result = cli("export-xmp", *dry)
        assert result.exit_code == 1 and "Exiv2 cannot read" in result.output, result.output
    assert sidecar.read_text(encoding="utf-8") == _UNREADABLE[case]


def test_a_latin1_sidecar_is_left_alone_and_values_must_survive(cli, photos, shapes: Path) -> None:
    folder = photos(1)
    cli("index", folder, *SAMPLE, "--tags", "--vocabulary", shapes)
    photo = next(folder.iterdir())
    sidecar = sidecar_path(str(photo))
    latin = DARKTABLE.replace('encoding="UTF-8"', 'encoding="ISO-8859-1"').replace("written by hand", "Café")
    sidecar.write_bytes(latin.encode("latin-1"))
    result = cli("export-xmp")
    assert result.exit_code == 1 and "not UTF-8" in result.output
    assert sidecar.read_bytes() == latin.encode("latin-1")


def test_sidecars_are_never_more_readable_than_their_photo(cli, photos, shapes: Path) -> None:
    folder = photos(2)
    cli("index", folder, *SAMPLE, "--tags", "--vocabulary", shapes, "--ocr")
    private, public = sorted(folder.iterdir())
    private.chmod(0o600)
    sidecar_path(str(public)).write_text(DARKTABLE, encoding="utf-8")
    sidecar_path(str(public)).chmod(0o640)
    assert cli("export-xmp", "--text").exit_code == 0
    assert sidecar_path(str(private)).stat().st_mode & 0o777 == 0o600
    assert sidecar_path(str(public)).stat().st_mode & 0o777 == 0o640  # as it was: the photo allows more


def test_lightroom_never_merges_two_raw_files_into_one_sidecar(cli, tmp_path: Path, shapes: Path) -> None:
    from PIL import Image


    folder = tmp_path / "raw"
    folder.mkdir()
    write_dng(folder / "IMG_1.dng", Image.new("RGB", (96, 64), "red"))
    write_dng(folder / "IMG_1.nef", Image.new("RGB", (96, 64), "blue"))  # LibRaw reads it by its content
    assert cli("index", folder, *SAMPLE, "--tags", "--vocabulary", shapes).exit_code == 0
    result = cli("export-xmp", "--lightroom")
    assert result.exit_code == 1 and "would share its sidecar IMG_1.xmp" in result.output, result.output
    assert not (folder / "IMG_1.xmp").exists()
    assert cli("export-xmp").exit_code == 0  # each its own photo.ext.xmp: nothing shared
    assert (folder / "IMG_1.dng.xmp").exists() and (folder / "IMG_1.nef.xmp").exists()


def test_a_sidecar_declaring_a_dtd_is_left_alone(cli, photos, shapes: Path) -> None:
    """Exiv2 reads a sidecar with a DTD as empty: written back, everything in it would be gone."""
    folder = photos(1)
    cli("index", folder, *SAMPLE, "--tags", "--vocabulary", shapes)
    sidecar = sidecar_path(str(next(folder.iterdir())))
    declared = DARKTABLE.replace('<x:xmpmeta', '<!DOCTYPE x:xmpmeta [<!ENTITY who "me">]>\n<x:xmpmeta', 1)
    sidecar.write_text(declared, encoding="utf-8")
    result = cli("export-xmp")
    assert result.exit_code == 1 and "declares a DTD" in result.output
    assert sidecar.read_text(encoding="utf-8") == declared


@pytest.mark.slow
def test_long_names_fit_and_what_a_killed_export_left_is_removed(cli, tmp_path: Path, shapes: Path) -> None:
    import shutil
    import subprocess
    import sys

    from clipdex.retrieval import config
    from tests.conftest import SAMPLE_ROWS

    folder = tmp_path / "long"
    folder.mkdir()
    photo = folder / ("p" * 247 + ".png")  # 251 characters: its sidecar's name is the longest a name can be
    shutil.copy(config.SAMPLE_DATA_DIR / SAMPLE_ROWS[0]["image"], photo)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftover = folder / f".clipdex-{gone.stdout.strip()}-0123abcd.xmp.tmp"  # from an export killed with -9
    leftover.write_text("half a sidecar")
    cli("index", folder, *SAMPLE, "--tags", "--vocabulary", shapes)
    assert cli("export-xmp").exit_code == 0
    assert sidecar_path(str(photo)).is_file() and not leftover.exists()
