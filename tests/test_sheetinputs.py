"""The inputs as the evidence sheet shows them (relay.sheetinputs): text with its spans, a
screenshot as browsers can show it, standard input named so, every input hashed."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable

import pytest
from PIL import Image
from pngs import encode_png

from relay.sheetinputs import image_source, text_source


def test_text_source_keeps_each_unit_span_and_hashes_the_bytes() -> None:
    data = "Bonjour  à tous.\n".encode()
    src = text_source("-", data, data.decode())
    assert src.name == "(standard input)" and src.kind == "text" and src.size == len(data)
    assert src.sha256 == hashlib.sha256(data).hexdigest()
    assert [src.text[a:b] for a, b in src.spans] == ["Bonjour", "à", "tous."]
    assert text_source("leak.txt", data, data.decode()).name == "leak.txt"


def pillow(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (5, 3), 200).save(buf, fmt)
    return buf.getvalue()


@pytest.mark.parametrize("make,mime,as_given", [
    (lambda: encode_png(5, 3, 0, bytes(15)), "image/png", True),
    (lambda: pillow("JPEG"), "image/jpeg", True),
    (lambda: pillow("WEBP"), "image/webp", True),
    (lambda: pillow("TIFF"), "image/png", False),  # browsers do not show TIFF: converted
    (lambda: pillow("BMP"), "image/png", False),
])
def test_image_source_shows_what_a_browser_can(make: Callable[[], bytes], mime: str,
                                               as_given: bool) -> None:
    data = make()
    src = image_source("shot", data, [])
    assert (src.kind, src.mime, src.width, src.height) == ("screenshot", mime, 5, 3)
    assert src.image is not None and (src.image == data) is as_given
    assert src.sha256 == hashlib.sha256(data).hexdigest() and src.boxes == []


def test_an_image_that_cannot_be_decoded_is_shown_as_its_ocr_text_only() -> None:
    src = image_source("shot.png", b"\x89PNG\r\n\x1a\n broken", [])
    assert src.image is None and src.kind == "screenshot"
