"""XMP sidecars: a photo's tags as `dc:subject` keywords (and, when asked, its recognised text as
`dc:description`) in the file beside it that digiKam, darktable and Lightroom read.

Sidecars are written with Exiv2, the library digiKam itself keeps them with, which parses the whole packet and
serialises it back: every property already there (a darktable sidecar holds the photo's entire edit history)
survives. Only `photo.jpg.xmp` (or Lightroom's `photo.xmp` for RAW files) is written, never the photo; keywords
are added once, a description only where there is none, and a sidecar with nothing to add is not rewritten, so a
second run changes no byte. Each write goes through a copy renamed over the old file: a crash leaves the old
sidecar or the new one, whole."""

from __future__ import annotations

import os
import re
import shutil
import stat
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence
from xml.etree import ElementTree

from clipdex.retrieval.digest import leftover_name, remove_abandoned
from clipdex.retrieval.errors import ClipdexError
from clipdex.retrieval.media.raw import is_raw

_SUBJECT, _DESCRIPTION = "Xmp.dc.subject", "Xmp.dc.description"


@dataclass
class SidecarChange:
    sidecar: str
    image: str
    keywords: list[str] = field(default_factory=list)  # added
    description: bool = False  # a description was added
    created: bool = False


@dataclass
class XmpReport:
    changed: list[SidecarChange] = field(default_factory=list)
    unchanged: int = 0
    failed: list[dict] = field(default_factory=list)

    def as_json(self) -> dict:
        return {"changed": [c.__dict__ for c in self.changed], "unchanged": self.unchanged, "failed": self.failed}


def sidecar_path(image: str, lightroom: bool = False) -> Path:
    """`photo.jpg.xmp` (digiKam, darktable); with `lightroom`, a RAW file's is `photo.xmp`, as Lightroom names it."""
    path = Path(image)
    return path.with_suffix(".xmp") if lightroom and is_raw(path.name) else path.with_name(path.name + ".xmp")


def write_sidecars(images: Sequence[str], tagged: dict[str, list[str]], texts: dict[str, str], lightroom: bool,
                   dry_run: bool, indexed: dict[str, tuple]) -> XmpReport:
    """Each image's tags (and text) into its sidecar; what changed and what could not be written, and why.
    `indexed`: each image's (real path, size, mtime) when it was indexed. An image whose path now leads to another
    file (a re-pointed link), or whose file changed since, gets nothing: its tags describe what it was."""
    report = XmpReport()
    for folder in {Path(image).parent for image in images}:
        remove_abandoned(folder, "*.xmp.tmp")
    sharing: dict[Path, list[str]] = {}  # --lightroom: IMG_1.cr2 and IMG_1.nef would both be IMG_1.xmp
    for image in images:
        sharing.setdefault(sidecar_path(image, lightroom), []).append(image)
    for image in images:
        sidecar = sidecar_path(image, lightroom)
        others = [Path(other).name for other in sharing[sidecar] if other != image]
        if others:
            report.failed.append({"path": image, "error": f"{', '.join(others)} would share its sidecar "
                                                          f"{sidecar.name}: left alone"})
            continue
        if not os.path.isfile(image):
            report.failed.append({"path": image, "error": "the file is gone: index again"})
            continue
        real, size, mtime = indexed.get(image, (None, None, None))
        if real is not None and os.path.realpath(image) != real:
            report.failed.append({"path": image, "error": "this path now leads to another file than the one "
                                                          "indexed (a link was re-pointed): index again"})
            continue
        found = os.stat(image)
        if size is not None and (found.st_size, found.st_mtime) != (size, mtime):
            report.failed.append({"path": image, "error": "the file changed since it was indexed: index again"})
            continue
        try:
            change = update_sidecar(image, tagged.get(image, []), texts.get(image), lightroom, dry_run)
        except ClipdexError as exc:
            report.failed.append({"path": image, "error": str(exc)})
            continue
        if change is None:
            report.unchanged += 1
        else:
            report.changed.append(change)
    return report


def update_sidecar(image: str, keywords: Sequence[str], description: str | None = None, lightroom: bool = False,
                   dry_run: bool = False) -> SidecarChange | None:
    """Add what is missing to the image's sidecar (made when there is none); None when nothing was missing."""
    exiv2 = _exiv2()
    sidecar = sidecar_path(image, lightroom)
    exists = os.path.lexists(sidecar)
    if exists and (sidecar.is_symlink() or not sidecar.is_file()):
        raise ClipdexError(f"{sidecar} is not a regular file: left alone")
    if exists and not sidecar.stat().st_mode & stat.S_IWUSR:
        raise ClipdexError(f"{sidecar} is read-only: left alone")
    keywords = [k for k in dict.fromkeys(keywords) if _XML_UNSAFE.search(k) is None]
    description = _XML_UNSAFE.sub(" ", description) if description else description
    try:
        properties = _check_well_formed(sidecar) if exists else 0
        have, described, values = _read(exiv2, sidecar) if exists else ([], False, {})
        if properties and not values:  # XMP Toolkit errors (a property twice, parseType="Literal", stray text)
            raise ClipdexError(f"{sidecar} holds properties Exiv2 cannot read: left alone")
        change = SidecarChange(str(sidecar), image, [k for k in keywords if k not in have],
                               bool(description) and not described, not exists)
        if not change.keywords and not change.description:
            return None
        if not dry_run:
            _write(exiv2, sidecar, Path(image), [*have, *change.keywords], description if change.description else None,
                   values)
    except exiv2.Exiv2Error as exc:
        raise ClipdexError(f"cannot update {sidecar}: {exc.args[-1] if exc.args else exc}") from None
    except OSError as exc:
        raise ClipdexError(f"cannot write {sidecar}: {exc.strerror or exc}") from None
    return change


# What XML 1.0 cannot hold (a sidecar with it is no longer readable), and what is no text (controls, bidi).
_XML_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff\u202a-\u202e\u2066-\u2069]")


_RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"
_DECLARED = re.compile(rb"""^\s*<\?xml[^>]*encoding\s*=\s*["']([^"']+)["']""")


def _check_well_formed(sidecar: Path) -> int:
    """How many properties the sidecar's XML holds, read by ElementTree. Exiv2 reads a sidecar holding one
    character XML forbids as an empty one, and writing that back would drop everything in it: such a file, one
    declaring a DTD (XMP never does) or an encoding other than UTF-8 (XMP packets are Unicode; Exiv2 would read
    Latin-1 bytes as UTF-8 and write them back garbled) is refused instead."""
    data = sidecar.read_bytes()
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise ClipdexError(f"{sidecar} declares a DTD, which an XMP sidecar never does: left alone")
    declared = _DECLARED.match(data)
    if declared and declared.group(1).decode("ascii", "replace").lower().replace("_", "-") not in ("utf-8", "utf8"):
        raise ClipdexError(f"{sidecar} declares the encoding {declared.group(1).decode('ascii', 'replace')}, "
                           f"not UTF-8: left alone")
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as exc:
        raise ClipdexError(f"{sidecar} is not well-formed XML ({exc}): left alone") from None
    return sum(len(node) + sum(not name.startswith(_RDF) for name in node.attrib)
               for node in root.iter(_RDF + "Description"))


def _exiv2():
    try:
        import exiv2
    except ImportError:
        raise ClipdexError("export-xmp needs Exiv2's Python binding: pip install 'clipdex[xmp]'") from None
    return exiv2


def _open(exiv2, path: Path):
    opened = exiv2.ImageFactory.open(str(path))
    if opened.imageType() != exiv2.ImageType.xmp:  # an image under a sidecar's name: never written to
        raise ClipdexError(f"{path} is not an XMP sidecar: left alone")
    opened.readMetadata()
    return opened


def _values(opened) -> dict[str, str]:
    return {datum.key(): datum.toString() for datum in opened.xmpData()}


def _read(exiv2, path: Path) -> tuple[list[str], bool, dict[str, str]]:
    """The keywords a sidecar holds, whether it has a description, and every property's value."""
    keywords = []
    opened = _open(exiv2, path)  # held while its data is read: the binding's data does not keep it alive
    for datum in opened.xmpData():
        if datum.key() == _SUBJECT:
            value = datum.value()
            keywords = [value.toString(i) for i in range(value.count())]
    values = _values(opened)
    return keywords, _DESCRIPTION in values, values


def _write(exiv2, sidecar: Path, image: Path, keywords: list[str], description: str | None,
           before: dict[str, str]) -> None:
    """Write through a copy renamed over the sidecar, only if every other property keeps its value; the sidecar
    is never more readable than its photo (it may hold the photo's recognised text)."""
    tmp = sidecar.with_name(leftover_name(f"{uuid.uuid4().hex[:8]}.xmp.tmp"))  # short: any name fits
    try:
        mode = stat.S_IMODE(os.stat(image).st_mode) & 0o666
        if sidecar.exists():
            shutil.copy2(sidecar, tmp)
            mode &= stat.S_IMODE(sidecar.stat().st_mode)
            opened = _open(exiv2, tmp)
        else:
            opened = exiv2.ImageFactory.create(exiv2.ImageType.xmp, str(tmp))
            opened.readMetadata()
        os.chmod(tmp, mode | stat.S_IWUSR | stat.S_IRUSR)
        data = opened.xmpData()
        bag = exiv2.XmpArrayValue(exiv2.TypeId.xmpBag)
        for keyword in keywords:
            bag.read(keyword)
        data[_SUBJECT] = bag
        if description:
            data[_DESCRIPTION] = exiv2.LangAltValue(f'lang="x-default" {description}')
        opened.writeMetadata()
        after = _values(_open(exiv2, tmp))
        lost = [key for key, value in before.items() if key not in (_SUBJECT, _DESCRIPTION) and after.get(key) != value]
        if lost:  # never, as Exiv2 merges; but a sidecar is someone's edit history: checked, not assumed
            raise ClipdexError(f"updating {sidecar} would change {', '.join(sorted(lost)[:3])}: left alone")
        os.replace(tmp, sidecar)
    finally:
        tmp.unlink(missing_ok=True)
