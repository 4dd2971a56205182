"""The Tesseract driver: from an image's bytes to word boxes (relay.ocrgaps reads the bits).

`run_tesseract` gets the word boxes (TSV output of the `tesseract` binary); text smaller than
MAGNIFY_BELOW_EM pixels is read magnified 2x (relay.greyimage), which brings 1x screenshots to the
accuracy of 2x ones, PNG and JPEG alike (every format is decoded with Pillow).

Hostile images: `check_image` reads only the header (Pillow's lazy open) and refuses, before
anything is decoded, an image over MAX_PIXELS (all pages of a TIFF together) or with a side over
MAX_SIDE (greyimage.too_large); Tesseract runs with at most TESSERACT_MEMORY of address space and
TIMEOUT seconds. Every refusal is an UnreadableImage (ImageTooLarge) with a one-line message.
"""

from __future__ import annotations

import csv
import functools
import io
import os
import resource
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

from PIL import UnidentifiedImageError

from .errors import CANNOT_RUN, RelayError
from .greyimage import (
    DECODE_ERRORS,
    MAX_PIXELS,
    MAX_SIDE,
    decode_grey,
    ink_line_height,
    open_image,
    pgm2x,
    too_large,
)
from .ocrgaps import OcrWord, classify_gaps, text_size
from .tokens import ExcerptWord

PACKAGES = "tesseract-ocr tesseract-ocr-eng tesseract-ocr-fra"
TIMEOUT = 120.0  # seconds for one tesseract run (a 25-megapixel page takes about 20 s)
TESSERACT_MEMORY = 2 << 30  # bytes of address space for the tesseract child (RLIMIT_AS)


class OcrUnavailable(RelayError):
    """OCR cannot run here: tesseract or a language's data is missing, or tesseract failed."""

    exit_status = CANNOT_RUN


class UnreadableImage(OcrUnavailable, ValueError):
    """The bytes are not an image tesseract can read. A subclass of OcrUnavailable, so that a
    caller reporting OcrUnavailable reports this too."""


class ImageTooLarge(UnreadableImage):
    """The header announces more pixels than MAX_PIXELS (or a side over MAX_SIDE): refused
    before anything is decoded."""


# --- tesseract --------------------------------------------------------------------------

IMAGE_MAGIC = (
    b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*",
    b"P1", b"P2", b"P3", b"P4", b"P5", b"P6",
)
MAGNIFY_BELOW_EM = 22.0  # px: text smaller than this is magnified 2x before OCR
PSM = 3  # automatic page segmentation: screenshots have blocks, columns, UI around the text


def is_image(data: bytes) -> bool:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return True
    return any(data.startswith(m) for m in IMAGE_MAGIC)


def check_image(data: bytes) -> tuple[str, int, int, int]:
    """(format, width, height, frames) from the image's header only (Pillow reads no pixel to
    open an image); ImageTooLarge when decoding it would need more than MAX_PIXELS, else
    UnreadableImage when Pillow cannot tell its size."""
    try:
        with open_image(data) as im:
            fmt, (width, height) = im.format or "?", im.size
            frames = getattr(im, "n_frames", 1) if fmt == "TIFF" else 1
    except UnidentifiedImageError:  # Pillow's message names an in-memory buffer
        raise UnreadableImage("cannot read the image header: not an image Pillow knows, or "
                              "its header is damaged") from None
    except (*DECODE_ERRORS, struct.error) as e:
        raise UnreadableImage(f"cannot read the image header: {e}") from None
    pages = f" x {frames} pages" if frames > 1 else ""
    if too_large(width, height, frames):
        raise ImageTooLarge(
            f"{fmt} image of {width} x {height} pixels{pages} is over the limit of "
            f"{MAX_PIXELS / 1e6:.0f} megapixels ({MAX_SIDE} per side); refused before decoding")
    return fmt, width, height, frames


def _limit_child() -> None:  # pragma: no cover (runs in the child, between fork and exec)
    resource.setrlimit(resource.RLIMIT_AS, (TESSERACT_MEMORY, TESSERACT_MEMORY))
    resource.setrlimit(resource.RLIMIT_CPU, (int(TIMEOUT) + 5, int(TIMEOUT) + 10))


def _tesseract_exe() -> str:
    exe = shutil.which("tesseract")
    if exe is None:
        raise OcrUnavailable(f"tesseract not found: install it with 'apt-get install {PACKAGES}'")
    return exe


@functools.lru_cache(maxsize=8)
def _installed_languages(exe: str, tessdata: str | None) -> frozenset[str]:
    try:
        proc = subprocess.run([exe, "--list-langs"], capture_output=True, timeout=60,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise OcrUnavailable(f"tesseract does not run: {e}") from None
    lines = (proc.stdout + proc.stderr).decode("utf-8", "replace").splitlines()
    return frozenset(s.strip() for s in lines if s.strip() and " " not in s.strip())


def _check_languages(exe: str, languages: str) -> None:
    have = _installed_languages(exe, os.environ.get("TESSDATA_PREFIX"))
    missing = [lang for lang in languages.split("+") if lang and lang not in have]
    if missing:
        pkgs = " ".join(f"tesseract-ocr-{m}" for m in missing)
        raise OcrUnavailable(f"tesseract has no language data for {'+'.join(missing)}: "
                             f"install it with 'apt-get install {pkgs}'")


def _tsv(exe: str, image: bytes, languages: str, scale: int) -> list[OcrWord]:
    with tempfile.TemporaryDirectory(prefix="relay-ocr-") as tmp:
        src = Path(tmp, "image")
        src.write_bytes(image)
        try:
            proc = subprocess.run(
                [exe, str(src), "stdout", "-l", languages, "--psm", str(PSM), "tsv"],
                capture_output=True, timeout=TIMEOUT, check=False,
                # one thread: OpenMP threads only spin against each other on a busy machine
                env={**os.environ, "OMP_THREAD_LIMIT": "1"},
                preexec_fn=_limit_child,  # memory and CPU bounds (the timeout is wall clock)
            )
        except subprocess.TimeoutExpired:
            raise OcrUnavailable(f"tesseract took more than {TIMEOUT:.0f} s") from None
        except OSError as e:
            raise OcrUnavailable(f"tesseract does not run: {e}") from None
    err = [s for s in proc.stderr.decode("utf-8", "replace").splitlines() if s.strip()]
    # out of memory: killed (SIGSEGV/SIGXCPU), "malloc fail", or cannot even map its libraries;
    # leptonica may then still exit 0 with an empty page
    if proc.returncode < 0 or any(w in e.lower() for e in err
                                  for w in ("alloc", "failed to map", "out of memory")):
        raise ImageTooLarge(f"tesseract stopped: the image needs more than its limits of "
                            f"{TESSERACT_MEMORY >> 20} MiB of memory and {TIMEOUT:.0f} s")
    if proc.returncode != 0:
        raise UnreadableImage(f"tesseract cannot read this image: {err[-1] if err else ''}"
                              .rstrip(": "))
    rows = csv.DictReader(io.StringIO(proc.stdout.decode("utf-8", "replace")),
                          delimiter="\t", quoting=csv.QUOTE_NONE)
    out = []
    for r in rows:
        text = (r.get("text") or "").strip()
        if r.get("level") != "5" or not text:
            continue
        out.append(OcrWord(
            text, int(r["left"]), int(r["top"]), int(r["width"]), int(r["height"]),
            (int(r["page_num"]), int(r["block_num"]), int(r["par_num"]), int(r["line_num"])),
            float(r["conf"]), scale,
        ))
    return out


def run_tesseract(image: bytes, languages: str = "eng+fra", *,
                  magnify: bool | None = None) -> list[OcrWord]:
    """Word boxes of an image (PNG, JPEG, GIF, BMP, TIFF, WebP or PNM) in reading order.

    magnify None (default): an image whose text is smaller than MAGNIFY_BELOW_EM pixels is read
    magnified 2x (its words then have scale 2). The size is judged from the rows of ink when
    they tell it clearly, else from a first reading. True: magnify. False: never. Every format
    is decoded with Pillow (relay.greyimage)."""
    if not is_image(image):
        raise UnreadableImage("not an image (PNG, JPEG, GIF, BMP, TIFF, WebP or PNM expected)")
    check_image(image)
    exe = _tesseract_exe()
    _check_languages(exe, languages)
    decoded = decode_grey(image) if magnify is not False else None  # once, if at all
    if magnify is None and decoded:
        width, height, grey = decoded
        rows = min(height, 400)  # rows enough to judge the text size
        ink = ink_line_height(width, rows, grey[:width * rows])
        if ink is not None and ink < 0.8 * MAGNIFY_BELOW_EM:
            magnify = True
    if magnify and decoded:
        return _tsv(exe, pgm2x(*decoded), languages, 2)
    words = _tsv(exe, image, languages, 1)
    size = text_size(words)
    if magnify is None and size is not None and size < MAGNIFY_BELOW_EM and decoded:
        return _tsv(exe, pgm2x(*decoded), languages, 2) or words
    return words


def read_image(image: bytes, languages: str = "eng+fra") -> list[ExcerptWord]:
    """Units of a screenshot with the bit each following gap shows (None: not read)."""
    return classify_gaps(run_tesseract(image, languages))
