"""A picture's two texts in each file format, with no file access: A1111's `parameters`
(parameters.py) and glide's JSON record (record.py).

- PNG: text chunks `parameters` and `glide` (pngfile.py writes them).
- JPEG and WebP: `parameters` in EXIF's UserComment, as AUTOMATIC1111 writes it (an 8-byte
  "UNICODE\\0" code, then UTF-16 big-endian: what piexif's UserComment.dump(..., "unicode")
  gives), so A1111 and the tools that read its pictures show it; the JSON record in an XMP
  packet under glide's own namespace, where a viewer's caption field stays free.

The JSON is written with ASCII escapes in XMP: any prompt, lone surrogates of a file name that
is not UTF-8 included, reads back exactly, and the XML holds no character XML forbids.
"""

from __future__ import annotations

import json
import struct
import xml.etree.ElementTree as ElementTree
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

from PIL import Image

from .parameters import parse_parameters_text

# EXIF: the Exif sub-IFD and its UserComment tag (EXIF 2.32, 4.6.5).
EXIF_IFD = 0x8769
USER_COMMENT = 0x9286
_UNICODE_CODE = b"UNICODE\0"
_ASCII_CODE = b"ASCII\0\0\0"
_CODE_SIZE = 8

XMP_NAMESPACE = "urn:glidecli:xmp:1.0:"  # ours alone: no other tool writes a `record` there
_XMP_RECORD = f"{{{XMP_NAMESPACE}}}record"


@dataclass(frozen=True)
class PictureTexts:
    """What a picture file holds of glide's: A1111's `parameters` text and glide's JSON record,
    each None where absent."""

    parameters: str | None = None
    record: str | None = None


def record_json(meta: Mapping[str, Any], *, ascii_only: bool = False) -> str:
    """The record as the `glide` JSON text; escapes where UTF-8 cannot hold the text (a file
    name's lone surrogates) or where `ascii_only`."""
    if not ascii_only:
        text = json.dumps(dict(meta), ensure_ascii=False, default=str)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            pass  # JSON's escapes read it back exactly
        else:
            return text
    return json.dumps(dict(meta), ensure_ascii=True, default=str)


def record_from_texts(texts: PictureTexts) -> dict[str, Any]:
    """The settings a picture records: glide's JSON when it holds an object, else whatever
    A1111's `parameters` text gives, else {}."""
    if texts.record is not None:
        try:
            record = json.loads(texts.record)
        except json.JSONDecodeError:
            record = None  # damaged or foreign; fall back to the readable text
        if isinstance(record, dict):  # another tool's record may hold a list, a number...
            return record
    if texts.parameters is not None:
        return parse_parameters_text(texts.parameters)
    return {}


# --------------------------------------------------------------------------- EXIF UserComment


def user_comment_bytes(text: str) -> bytes:
    """`text` as EXIF's UserComment holds it, the way A1111 writes its `parameters`."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")  # lone surrogates as \\udcXX
    return _UNICODE_CODE + text.encode("utf-16-be")


def user_comment_text(raw: Any) -> str | None:
    """The text of a UserComment value: its 8-byte character code then the text. UNICODE's
    byte order is not fixed by the standard (A1111 writes big-endian, some cameras the file's
    order), so it is read from where the zero bytes of ASCII characters fall."""
    if isinstance(raw, str):
        return raw.rstrip("\0") or None
    if not isinstance(raw, bytes) or len(raw) < _CODE_SIZE:
        return None
    code, body = raw[:_CODE_SIZE], raw[_CODE_SIZE:]
    if code == _UNICODE_CODE:
        if body[:2] in (b"\xfe\xff", b"\xff\xfe"):
            text = body.decode("utf-16", errors="replace")
        else:
            big_endian = body[0::2].count(0) >= body[1::2].count(0)
            text = body.decode("utf-16-be" if big_endian else "utf-16-le", errors="replace")
    elif code == _ASCII_CODE:
        text = body.decode("utf-8", errors="replace")
    else:  # undefined or JIS: what A1111 does with a code it cannot read, UTF-8 of it all
        text = (body if code == b"\0" * _CODE_SIZE else raw).decode("utf-8", errors="ignore")
    return text.rstrip("\0") or None


def exif_with_parameters(parameters: str) -> bytes:
    """An EXIF block (as JPEG's APP1 segment holds it: "Exif\\0\\0", then a big-endian TIFF
    structure) whose only entry is `parameters` in UserComment. Built here because Pillow's
    Exif writes the tag as BYTE where the standard (and piexif, which A1111 reads it with) has
    UNDEFINED."""
    comment = user_comment_bytes(parameters)
    ifd0 = 8  # after the TIFF header
    exif_ifd = ifd0 + _IFD_SIZE
    data = exif_ifd + _IFD_SIZE
    return b"".join((
        b"Exif\0\0MM\0\x2a", struct.pack(">I", ifd0),
        _one_entry_ifd(EXIF_IFD, _LONG, 1, struct.pack(">I", exif_ifd)),
        _one_entry_ifd(USER_COMMENT, _UNDEFINED, len(comment), struct.pack(">I", data)),
        comment,
    ))


_LONG, _UNDEFINED = 4, 7  # TIFF field types
_IFD_SIZE = 2 + 12 + 4  # entry count, one entry, next IFD's offset


def _one_entry_ifd(tag: int, field_type: int, count: int, value: bytes) -> bytes:
    return struct.pack(">HHHI", 1, tag, field_type, count) + value + struct.pack(">I", 0)


# --------------------------------------------------------------------------- XMP


def record_xmp(record: str) -> bytes:
    """An XMP packet holding the JSON record (ASCII JSON: see the module's notes)."""
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
        ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        f'  <rdf:Description rdf:about="" xmlns:glide="{XMP_NAMESPACE}">\n'
        f"   <glide:record>{escape(record)}</glide:record>\n"
        "  </rdf:Description>\n"
        " </rdf:RDF>\n"
        "</x:xmpmeta>\n"
        '<?xpacket end="w"?>'
    ).encode()


def record_from_xmp(xmp: Any) -> str | None:
    """The JSON record in an XMP packet, None when it holds none or is not XML. (ElementTree
    resolves no external entity, and its expat refuses entity expansion bombs.)"""
    if isinstance(xmp, str):
        xmp = xmp.encode("utf-8")
    if not isinstance(xmp, bytes) or not xmp:
        return None
    try:
        root = ElementTree.fromstring(xmp.strip(b"\0 \n\r\t"))
    except ElementTree.ParseError:
        return None
    element = root.find(f".//{_XMP_RECORD}")
    return element.text if element is not None and element.text else None


# --------------------------------------------------------------------------- any picture


def picture_texts(image: Image.Image) -> PictureTexts:
    """The texts of an open picture, by its format: PNG's text chunks (also those after the
    pixels), JPEG's and WebP's EXIF UserComment and XMP; nothing from any other format."""
    if image.format == "PNG":
        texts = dict(getattr(image, "text", {}))
        return PictureTexts(_text_or_none(texts.get("parameters")), _text_or_none(texts.get("glide")))
    if image.format in ("JPEG", "MPO", "WEBP"):  # MPO: a JPEG with more frames, as phones write
        try:
            comment = image.getexif().get_ifd(EXIF_IFD).get(USER_COMMENT)
        except (OSError, SyntaxError, ValueError, KeyError, TypeError, IndexError):  # damaged EXIF: no text from it
            comment = None
        return PictureTexts(user_comment_text(comment), record_from_xmp(image.info.get("xmp")))
    return PictureTexts()


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None
