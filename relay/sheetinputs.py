"""The inputs of a decode as the evidence sheet shows them: a text (its cleaned text and each
unit's span) or a screenshot (the image to show and each unit's OCR boxes), with their hashes,
and the custody facts (version, database, time). Built by relay.cli from what it read."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, field

from .ocrgaps import OcrWord, unit_boxes
from .tokens import excerpt_spans

SHOWN_AS_IS = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg", b"GIF8": "image/gif"}


@dataclass
class Source:
    """One input as decode read it: a text (its cleaned text and each unit's span) or a
    screenshot (the image to show and each unit's OCR boxes)."""

    name: str
    sha256: str
    size: int
    kind: str  # "text" or "screenshot"
    text: str = ""
    spans: list[tuple[int, int]] = field(default_factory=list)
    image: bytes | None = None  # what the page shows (PNG, JPEG, GIF or WebP)
    mime: str = ""
    width: int = 0
    height: int = 0
    boxes: list[tuple[str, OcrWord, OcrWord]] = field(default_factory=list)


@dataclass
class Custody:
    version: str
    db_path: str
    decoded_at: str  # UTC, ISO 8601


def _named_input(name: str) -> str:
    return "(standard input)" if name == "-" else name


def text_source(name: str, data: bytes, text: str) -> Source:
    """`text` is `data` decoded as decode decoded it; name "-" is standard input."""
    cleaned, spans = excerpt_spans(text)
    return Source(_named_input(name), hashlib.sha256(data).hexdigest(), len(data), "text",
                  cleaned, spans)


def image_source(name: str, data: bytes, words: Sequence[OcrWord]) -> Source:
    """`words`: the OCR words decode classified (ocr.run_tesseract of `data`)."""
    src = Source(_named_input(name), hashlib.sha256(data).hexdigest(), len(data), "screenshot",
                 boxes=unit_boxes(words))
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            src.width, src.height = im.size
            mime = next((m for magic, m in SHOWN_AS_IS.items() if data.startswith(magic)), "")
            if not mime and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
                mime = "image/webp"
            if mime:
                src.image, src.mime = data, mime
            else:  # TIFF, BMP, PNM: browsers do not show them
                out = io.BytesIO()
                im.convert("RGB").save(out, "PNG")
                src.image, src.mime = out.getvalue(), "image/png"
    except Exception:  # noqa: BLE001 - the sheet then shows the OCR text only, and says so
        src.image = None
    return src

