"""Reading the gaps from a screenshot (draft)."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from relay.tokens import ExcerptWord, group_units

INSTALL_HINT = "install it with 'apt-get install tesseract-ocr tesseract-ocr-eng tesseract-ocr-fra'"


class OcrUnavailable(Exception):
    """Tesseract (or a language it needs) is missing or failed."""


@dataclass(frozen=True)
class OcrWord:
    text: str
    left: int
    top: int
    width: int
    height: int
    line: tuple[int, int, int, int]
    conf: float


def run_tesseract(image: bytes, languages: str = "eng+fra", psm: int = 3) -> list[OcrWord]:
    exe = shutil.which("tesseract")
    if exe is None:
        raise OcrUnavailable(f"tesseract not found: {INSTALL_HINT}")
    with tempfile.TemporaryDirectory(prefix="ocr-") as tmp:
        src = Path(tmp, "in.img")
        src.write_bytes(image)
        proc = subprocess.run(
            [exe, str(src), "stdout", "-l", languages, "--psm", str(psm), "tsv"],
            capture_output=True, check=False,
        )
    rows = csv.DictReader(io.StringIO(proc.stdout.decode("utf-8", "replace")),
                          delimiter="\t", quoting=csv.QUOTE_NONE)
    out = []
    for r in rows:
        if r["level"] != "5" or not r["text"].strip():
            continue
        out.append(OcrWord(r["text"], int(r["left"]), int(r["top"]), int(r["width"]),
                           int(r["height"]),
                           (int(r["page_num"]), int(r["block_num"]), int(r["par_num"]),
                            int(r["line_num"])), float(r["conf"])))
    return out


def classify_gaps(words: Sequence[OcrWord]) -> list[ExcerptWord]:
    raise NotImplementedError
