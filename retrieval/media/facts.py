"""What a photo's file says about where and with what it was taken: GPS position, camera, lens, exposure.

Read from the file's own metadata without decoding a pixel (EXIF through Pillow; a video's ISO 6709 location
through PyAV), else from its XMP sidecar's `exif:GPS…` properties (where darktable, digiKam and Lightroom put a
position added later). Damaged or absurd values are left out rather than guessed: a photo with no position is
never placed at 0°, 0°."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

_GPS_IFD = 0x8825
_EXIF_IFD = 0x8769
_MAKE, _MODEL = 0x010F, 0x0110
_LENS_MODEL = 0xA434
_EXPOSURE_TIME, _F_NUMBER, _ISO, _FOCAL_LENGTH = 0x829A, 0x829D, 0x8827, 0x920A
_EXIF_NS = "{http://ns.adobe.com/exif/1.0/}"
_ISO6709 = re.compile(r"^([+-]\d+(?:\.\d+)?)([+-]\d+(?:\.\d+)?)")
_XMP_COORDINATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*,\s*(\d+(?:\.\d+)?)(?:\s*,\s*(\d+(?:\.\d+)?))?\s*([NSEW])\s*$")
_LONGEST = 120  # characters kept of a camera or lens name: a tag is no place for a paragraph


@dataclass(frozen=True)
class Facts:
    latitude: float | None = None
    longitude: float | None = None
    camera: str | None = None  # make and model as a person says it: "FUJIFILM X-T4", "Apple iPhone 13"
    lens: str | None = None
    exposure: str | None = None  # "1/250 s · f/2.8 · ISO 200 · 35 mm", the parts the file has

    @property
    def placed(self) -> bool:
        return self.latitude is not None and self.longitude is not None


def position(latitude: float | None, longitude: float | None) -> tuple[float, float] | None:
    """A position only when it is one: finite, on the globe, and not exactly 0°, 0° (what a camera without a fix
    writes)."""
    if latitude is None or longitude is None:
        return None
    if not (math.isfinite(latitude) and math.isfinite(longitude)):
        return None
    if abs(latitude) > 90 or abs(longitude) > 180 or (latitude == 0 and longitude == 0):
        return None
    return latitude, longitude


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _degrees(parts, ref) -> float | None:
    """EXIF's (degrees, minutes, seconds) rationals with their N/S/E/W reference."""
    try:
        numbers = [_number(part) for part in parts]
    except TypeError:
        return None
    if len(numbers) != 3 or any(n is None or n < 0 for n in numbers):
        return None
    value = numbers[0] + numbers[1] / 60 + numbers[2] / 3600
    ref = ref.decode("ascii", "replace") if isinstance(ref, bytes) else str(ref or "")
    return -value if ref.strip("\x00 ").upper() in ("S", "W") else value


def _text(value) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    text = " ".join(value.replace("\x00", " ").split())
    text = "".join(ch for ch in text if ch.isprintable())
    return text[:_LONGEST] or None


def camera_name(make: str | None, model: str | None) -> str | None:
    """"Canon" + "Canon EOS R5" is "Canon EOS R5", not "Canon Canon EOS R5"; "Apple" + "iPhone 13" joined."""
    if not model:
        return make
    if not make or model.casefold().startswith(make.split()[0].casefold()):
        return model
    return f"{make} {model}"


def _exposure(exif_ifd) -> str | None:
    parts = []
    seconds = _number(exif_ifd.get(_EXPOSURE_TIME))
    if seconds and seconds > 0:
        parts.append(f"1/{round(1 / seconds)} s" if seconds < 0.5 else f"{seconds:g} s")
    aperture = _number(exif_ifd.get(_F_NUMBER))
    if aperture and aperture > 0:
        parts.append(f"f/{aperture:.1f}".replace(".0", ""))
    iso = exif_ifd.get(_ISO)
    iso = _number(iso[0] if isinstance(iso, tuple) and iso else iso)
    if iso and iso > 0:
        parts.append(f"ISO {round(iso)}")
    focal = _number(exif_ifd.get(_FOCAL_LENGTH))
    if focal and focal > 0:
        parts.append(f"{focal:g} mm")
    return " · ".join(parts) or None


def _from_exif(path: str) -> Facts:
    from PIL import Image

    from clipdex.retrieval.media.images import open_media, register_heif

    register_heif()
    with open_media(path) as stream, Image.open(stream) as im:
        exif = im.getexif()
        try:
            gps, details = exif.get_ifd(_GPS_IFD), exif.get_ifd(_EXIF_IFD)
        except Exception:  # a damaged IFD: what the main one holds still counts
            gps, details = {}, {}
        found = position(_degrees(gps.get(2, ()), gps.get(1)), _degrees(gps.get(4, ()), gps.get(3)))
        return Facts(*(found or (None, None)), camera_name(_text(exif.get(_MAKE)), _text(exif.get(_MODEL))),
                     _text(details.get(_LENS_MODEL)), _exposure(details))


def _from_video(path: str) -> Facts:
    """A phone video's position: QuickTime's ISO 6709 string ("+38.7223-009.1393+010.000/")."""
    try:
        import av
    except ImportError:
        return Facts()
    with av.open(path, metadata_errors="ignore") as container:
        tags = {key.casefold(): value for key, value in container.metadata.items()}
    found = None
    for key in ("location", "com.apple.quicktime.location.iso6709", "location-eng"):
        match = _ISO6709.match(str(tags.get(key, "")))
        if match:
            found = position(_number(match.group(1)), _number(match.group(2)))
            break
    model = _text(tags.get("com.apple.quicktime.model") or tags.get("model"))
    make = _text(tags.get("com.apple.quicktime.make") or tags.get("make"))
    return Facts(*(found or (None, None)), camera_name(make, model))


def _xmp_coordinate(value: str | None) -> float | None:
    """XMP's "38,43.2N" or "38,43,12N" (degrees, minutes[, seconds] and a direction), or a plain decimal."""
    if value is None:
        return None
    match = _XMP_COORDINATE.match(value)
    if not match:
        return _number(value.strip()) if re.fullmatch(r"\s*-?\d+(\.\d+)?\s*", value) else None
    degrees, minutes, seconds, direction = match.groups()
    number = float(degrees) + float(minutes) / 60 + float(seconds or 0) / 3600
    return -number if direction in "SW" else number


def sidecar_position(sidecar: Path) -> tuple[float, float] | None:
    """The position an XMP sidecar holds, as an attribute or an element; None for none, or a file that is no XML.
    (expat refuses entity expansion bombs; a sidecar is read at most a megabyte.)"""
    from xml.etree import ElementTree

    try:
        with open(sidecar, "rb") as f:
            data = f.read(1 << 20)
        root = ElementTree.fromstring(data)
    except (OSError, ElementTree.ParseError, ValueError):
        return None
    values: dict[str, str] = {}
    for node in root.iter():
        for name in ("GPSLatitude", "GPSLongitude"):
            if node.tag == _EXIF_NS + name and node.text:
                values.setdefault(name, node.text)
            if _EXIF_NS + name in node.attrib:
                values.setdefault(name, node.attrib[_EXIF_NS + name])
    return position(_xmp_coordinate(values.get("GPSLatitude")), _xmp_coordinate(values.get("GPSLongitude")))


def read_facts(path: str) -> Facts:
    """The file's facts; a sidecar's position when the file has none. Raises OSError or a Pillow/PyAV error for a
    file that cannot be read (the caller records it as read, with nothing found)."""
    from clipdex.retrieval.describe.sidecars import sidecar_path
    from clipdex.retrieval.media.video import is_video

    facts = _from_video(path) if is_video(path) else _from_exif(path)
    if facts.placed:
        return facts
    for sidecar in (sidecar_path(path), sidecar_path(path, lightroom=True)):
        found = sidecar_position(sidecar) if sidecar.is_file() else None
        if found:
            return Facts(*found, facts.camera, facts.lens, facts.exposure)
    return facts

