"""Reading the gaps from a screenshot.

OCR text carries no whitespace (Tesseract writes one space whatever the gap), but its word boxes
do: a doubled gap (two spaces, or NBSP + space in HTML) is one space wider than a single one.
`run_tesseract` gets the word boxes (TSV output of the `tesseract` binary); `classify_gaps`
turns the widths of the gaps between consecutive words of a line into bits:

- widths are measured in em, the font size told by each line's box heights and letters;
- the single level and the width of one space are fitted on the page (two clusters, checked
  for a real valley; a monospace font gives its pitch instead), so that nothing is assumed
  about the font; lines that a justified layout stretched get their own levels;
- a gap becomes 0 or 1 only when it lies clearly on one side (`LO`, `HI`), else None (also
  when it is far wider than a doubled gap: a tab stop or a table column);
  gaps next to punctuation get a small shift and a wider margin; next to a box that does not
  fit its letters or an unsure word, and across lines, they are None.

Small text (a 1x screenshot) gives coarse boxes. A PNG whose text is small is magnified 2x
(bilinear, pure Python) before OCR; that brings 1x screenshots to the accuracy of 2x ones.
Other formats (JPEG...) are read as they are; with small text, gaps next to punctuation are
then left unread (None).

Hostile images: `check_image` reads only the header (Pillow's lazy open) and refuses, before
anything is decoded, an image over MAX_PIXELS (all pages of a TIFF together) or with a side over
MAX_SIDE; the PNG decoder here never inflates more than the header's size announces (a zlib
bomb stops there); Tesseract runs with at most TESSERACT_MEMORY of address space and TIMEOUT
seconds. Every refusal is an UnreadableImage (ImageTooLarge) with a one-line message.
"""

from __future__ import annotations

import csv
import functools
import io
import os
import resource
import shutil
import statistics
import struct
import subprocess
import tempfile
import unicodedata
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path

from .tokens import ExcerptWord, group_units, norm

PACKAGES = "tesseract-ocr tesseract-ocr-eng tesseract-ocr-fra"
TIMEOUT = 120.0  # seconds for one tesseract run (a 25-megapixel page takes about 20 s)
MAX_PIXELS = 25_000_000  # an 8K screen is 33 MP, a 4K one 8.3 MP; a full-page capture of a
# long mail at 2x (1,600 x 15,000) is 24 MP
MAX_SIDE = 30_000  # px, either side (Tesseract's own limit is 32,767)
TESSERACT_MEMORY = 2 << 30  # bytes of address space for the tesseract child (RLIMIT_AS)


class OcrUnavailable(Exception):
    """OCR cannot run here: tesseract or a language's data is missing, or tesseract failed."""


class UnreadableImage(OcrUnavailable, ValueError):
    """The bytes are not an image tesseract can read. A subclass of OcrUnavailable, so that a
    caller reporting OcrUnavailable reports this too."""


class ImageTooLarge(UnreadableImage):
    """The header announces more pixels than MAX_PIXELS (or a side over MAX_SIDE): refused
    before anything is decoded."""


@dataclass(frozen=True)
class OcrWord:
    """One word box from tesseract. Coordinates are pixels of the image tesseract read: the
    input magnified `scale` times (see run_tesseract). `line` identifies the OCR line:
    (page, block, paragraph, line)."""

    text: str
    left: int
    top: int
    width: int
    height: int
    line: tuple[int, int, int, int]
    conf: float
    scale: int = 1


# --- tesseract --------------------------------------------------------------------------

IMAGE_MAGIC = (
    b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*",
    b"P1", b"P2", b"P3", b"P4", b"P5", b"P6",
)
MAGNIFY_BELOW_EM = 22.0  # px: text smaller than this is magnified 2x before OCR
MAGNIFY_MAX_PIXELS = 12_000_000  # input pixels; larger images are read as they are
PSM = 3  # automatic page segmentation: screenshots have blocks, columns, UI around the text


def _is_image(data: bytes) -> bool:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return True
    return any(data.startswith(m) for m in IMAGE_MAGIC)


def check_image(data: bytes) -> tuple[str, int, int, int]:
    """(format, width, height, frames) from the image's header only (Pillow reads no pixel to
    open an image); ImageTooLarge when decoding it would need more than MAX_PIXELS, else
    UnreadableImage when Pillow cannot tell its size."""
    try:
        from PIL import Image
    except ImportError:  # without Pillow only PNG headers can be read here
        return _png_header_check(data)
    pillow_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # checked below
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt, (width, height) = im.format or "?", im.size
            frames = getattr(im, "n_frames", 1) if fmt == "TIFF" else 1
    except (OSError, ValueError, SyntaxError, struct.error, EOFError) as e:
        raise UnreadableImage(f"cannot read the image header: {e}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = pillow_limit
    _refuse_large(fmt, width, height, frames)
    return fmt, width, height, frames


def _refuse_large(fmt: str, width: int, height: int, frames: int) -> None:
    pages = f" x {frames} pages" if frames > 1 else ""
    if width > MAX_SIDE or height > MAX_SIDE or width * height * frames > MAX_PIXELS:
        raise ImageTooLarge(
            f"{fmt} image of {width} x {height} pixels{pages} is over the limit of "
            f"{MAX_PIXELS / 1e6:.0f} megapixels ({MAX_SIDE} per side); refused before decoding")


def _png_header_check(data: bytes) -> tuple[str, int, int, int]:
    if not data.startswith(b"\x89PNG\r\n\x1a\n") or data[12:16] != b"IHDR":
        raise UnreadableImage("cannot read the image header (only PNG without Pillow)")
    width, height = struct.unpack(">II", data[16:24])
    _refuse_large("PNG", width, height, 1)
    return "PNG", width, height, 1


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


def text_size(words: Sequence[OcrWord]) -> float | None:
    """Median font size (em, pixels) of confidently read words."""
    ems = []
    for w in words:
        f = _shape_factor(w.text)
        if f and w.height > 0 and w.conf >= MIN_CONF:
            ems.append(w.height / f)
    return statistics.median(ems) if ems else None


def run_tesseract(image: bytes, languages: str = "eng+fra", *,
                  magnify: bool | None = None) -> list[OcrWord]:
    """Word boxes of an image (PNG, JPEG, GIF, BMP, TIFF, WebP or PNM) in reading order.

    magnify None (default): an image whose text is smaller than MAGNIFY_BELOW_EM pixels is read
    magnified 2x (its words then have scale 2). The size is judged from the rows of ink when
    they tell it clearly, else from a first reading. True: magnify. False: never. PNG is
    decoded with the standard library, other formats with Pillow."""
    if not _is_image(image):
        raise UnreadableImage("not an image (PNG, JPEG, GIF, BMP, TIFF, WebP or PNM expected)")
    check_image(image)
    exe = _tesseract_exe()
    _check_languages(exe, languages)
    if magnify is None:
        head = _decode_grey(image, max_rows=400)  # rows enough to judge the text size
        ink = _ink_line_height(*head) if head else None
        if ink is not None and ink < 0.8 * MAGNIFY_BELOW_EM:
            magnify = True
    if magnify and (decoded := _decode_grey(image)):
        return _tsv(exe, _pgm2x(*decoded), languages, 2)
    words = _tsv(exe, image, languages, 1)
    size = text_size(words)
    if magnify is None and size is not None and size < MAGNIFY_BELOW_EM \
            and (decoded := _decode_grey(image)):
        return _tsv(exe, _pgm2x(*decoded), languages, 2) or words
    return words


def read_image(image: bytes, languages: str = "eng+fra") -> list[ExcerptWord]:
    """Units of a screenshot with the bit each following gap shows (None: not read)."""
    return classify_gaps(run_tesseract(image, languages))


# --- PNG decoding and 2x magnification, standard library only ---------------------------
# Whole rows and images are handled as big integers with one 16-bit lane per byte, so that
# sums and shifts run in C; only PNG's Average and Paeth filters need a Python loop.


class _Unsupported(Exception):
    pass


def _widen(b: bytes | bytearray) -> int:
    buf = bytearray(2 * len(b))
    buf[1::2] = b
    return int.from_bytes(buf, "big")


def _narrow(x: int, n: int) -> bytes:
    """Low byte of each of the n lanes of x."""
    return x.to_bytes(2 * n + 2, "big")[3::2]


def _avg(a: bytes | bytearray, b: bytes | bytearray) -> bytes:
    return _narrow((_widen(a) + _widen(b)) >> 1, len(a))


def _unfilter(raw: bytes, row_bytes: int, height: int, bpp: int) -> bytearray:
    out = bytearray(row_bytes * height)
    prev: bytes | bytearray = bytes(row_bytes)
    stride = row_bytes + 1
    if len(raw) < stride * height:
        raise _Unsupported("truncated PNG data")
    for y in range(height):
        ftype = raw[y * stride]
        line = raw[y * stride + 1:(y + 1) * stride]
        cur: bytes | bytearray
        if ftype == 0:
            cur = line
        elif ftype == 2:  # Up
            cur = _narrow(_widen(line) + _widen(prev), row_bytes)
        elif ftype == 1:  # Sub
            cur = bytearray(row_bytes)
            for c in range(bpp):
                cur[c::bpp] = bytes(map((255).__and__, accumulate(line[c::bpp])))
        elif ftype in (3, 4):  # Average, Paeth
            cur = bytearray(line)
            for i in range(row_bytes):
                a = cur[i - bpp] if i >= bpp else 0
                b = prev[i]
                if ftype == 3:
                    cur[i] = (cur[i] + ((a + b) >> 1)) & 255
                    continue
                c = prev[i - bpp] if i >= bpp else 0
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                cur[i] = (cur[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        else:
            raise _Unsupported(f"PNG filter {ftype}")
        out[y * row_bytes:(y + 1) * row_bytes] = cur
        prev = cur
    return out


def _over_white(grey: bytes, alpha: bytes | bytearray) -> bytes:
    if not bytes(alpha).strip(b"\xff"):
        return grey  # opaque, as screenshots are
    return bytes(g * a // 255 + 255 - a for g, a in zip(grey, alpha, strict=True))


def png_grey(data: bytes, max_rows: int | None = None) -> tuple[int, int, bytes]:
    """Decode a non-interlaced 8- or 16-bit PNG (its first max_rows rows) to 8-bit grey over
    white. Raises _Unsupported for other kinds."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise _Unsupported("not a PNG")
    pos, idat, palette, trns = 8, [], b"", b""
    width = height = depth = ctype = interlace = -1
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body[:13])
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"PLTE":
            palette = body
        elif kind == b"tRNS":
            trns = body
        elif kind == b"IEND":
            break
        pos += 12 + length
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(ctype)
    if (channels is None or interlace != 0 or depth not in (8, 16) or width <= 0 or height <= 0
            or (ctype == 3 and depth != 8) or width * height > MAGNIFY_MAX_PIXELS):
        raise _Unsupported(f"PNG colour type {ctype}, depth {depth}, interlace {interlace}")
    bpp = channels * depth // 8
    if max_rows is not None and max_rows < height:
        height = max_rows
    # never inflate more than the rows need: a zlib bomb behind a small header stops here
    raw = zlib.decompressobj().decompress(b"".join(idat), (width * bpp + 1) * height)
    pix = _unfilter(raw, width * bpp, height, bpp)
    if depth == 16:
        pix = pix[0::2]  # high bytes
    n = width * height
    if ctype == 3:
        grey_of = bytes(
            (77 * palette[3 * i] + 150 * palette[3 * i + 1] + 29 * palette[3 * i + 2]) >> 8
            if 3 * i + 2 < len(palette) else 0 for i in range(256))
        alpha_of = bytes(trns[i] if i < len(trns) else 255 for i in range(256))
        return width, height, _over_white(pix.translate(grey_of), pix.translate(alpha_of))
    if ctype in (0, 4):
        grey = bytes(pix[0::channels])
    else:
        r, g, b = _widen(pix[0::channels]), _widen(pix[1::channels]), _widen(pix[2::channels])
        grey = _narrow((77 * r + 150 * g + 29 * b) >> 8, n)
    if ctype in (4, 6):
        grey = _over_white(grey, pix[channels - 1::channels])
    return width, height, grey


def magnify2(width: int, height: int, grey: bytes) -> bytes:
    """Bilinear 2x magnification of an 8-bit grey image (rows of `width` bytes)."""
    right = bytearray(grey[1:] + grey[-1:])
    right[width - 1::width] = grey[width - 1::width]  # the last column repeats itself
    wide = bytearray(2 * len(grey))
    wide[0::2] = grey
    wide[1::2] = _avg(grey, right)
    row = 2 * width
    mid = _avg(wide, wide[row:] + wide[-row:])
    parts = []
    for y in range(height):
        parts.append(wide[y * row:(y + 1) * row])
        parts.append(mid[y * row:(y + 1) * row])
    return b"".join(parts)


def _decode_grey(image: bytes, max_rows: int | None = None) -> tuple[int, int, bytes] | None:
    """The image as 8-bit grey rows: PNG with the standard library, any other format (JPEG,
    WebP, TIFF...) with Pillow; None if it cannot be decoded here."""
    if image.startswith(b"\x89PNG"):
        try:
            return png_grey(image, max_rows)
        except (_Unsupported, zlib.error, struct.error, IndexError, ValueError):
            return None
    try:
        from PIL import Image
    except ImportError:  # without Pillow, only PNG is magnified
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(image)) as im:
                _refuse_large(im.format or "?", im.width, im.height, 1)
                if im.width * im.height > MAGNIFY_MAX_PIXELS:  # as png_grey: read as it is
                    return None
                im.draft("L", im.size)  # JPEG: decode straight to grey (a third of RGB)
                if max_rows is not None and im.height > max_rows:
                    im = im.crop((0, 0, im.width, max_rows))  # before converting
                grey = im.convert("L")
                return grey.width, grey.height, grey.tobytes()
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError):
        return None  # (ImageTooLarge is a ValueError)


def _pgm2x(width: int, height: int, grey: bytes) -> bytes:
    return b"P5\n%d %d\n255\n" % (2 * width, 2 * height) + magnify2(width, height, grey)


def magnified_pgm(image: bytes) -> bytes | None:
    """The image magnified 2x as a binary PGM, or None if it cannot be decoded here."""
    decoded = _decode_grey(image)
    return _pgm2x(*decoded) if decoded else None


def _ink_line_height(width: int, height: int, grey: bytes) -> float | None:
    """Median height (px) of the bands of rows that hold contrast, i.e. of the text lines'
    ink, about one em; None unless there are enough such bands to tell."""
    bands, run = [], 0
    for y in range(height):
        row = grey[y * width:(y + 1) * width]
        if max(row) - min(row) > 96:
            run += 1
        elif run:
            bands.append(run)
            run = 0
    bands = [b for b in bands + [run] if b >= 4]
    return statistics.median(bands) if len(bands) >= 5 else None


# --- classification ---------------------------------------------------------------------

# Characters reaching above the x-height (capitals and accented letters too) or below the
# baseline: with them, a word's box height tells the font size (em).
ASCENDING = frozenset("bdfhiklt0123456789!?%&#@$/\\|()[]{}'\"«»")
DESCENDING = frozenset("gjpqy,;()[]{}çµ")
CLOSING = frozenset(".,;:!?…)]}»\"'”’›")

MIN_CONF = 40.0  # a word read less surely than this has an untrusted box
BOX_FIT = (0.7, 1.35)  # a box whose height is off its letters by more than this is untrusted
WIDTH_FIT = 0.22  # nor one whose width is off its letters by more than this, relative to the
# page (widths as Arial sets the letters; the page median absorbs another font's scale)
SPACE_PRIOR = 0.28  # em: space width of common proportional fonts (Arial 0.278, Times 0.25)
SPACE_RANGE = (0.17, 0.45)  # em: fitted space widths outside this are not believed
MONO_SPREAD = 0.06  # monospace: width per letter of long words varies less than this
LO, HI = 0.35, 0.65  # read 0 below LO, 1 above HI (in spaces above the single level)
TOO_WIDE = 1.6  # above this, a gap is no relay gap (a tab stop, a table column): None
PUNCT_SHIFT = 0.2  # after "word." or "word,", or before "(word", a single gap looks wider
LO_PUNCT, HI_PUNCT = 0.3, 0.75
LO_MARK, HI_MARK = 0.3, 1.05  # next to a token of punctuation only (« » : ? ...): no shift
SMALL_EM = 22.0  # px seen by tesseract: below, boxes are too coarse for the punctuation cases


# advance widths (1/1000 em) of Arial's letters, digits and punctuation
ADVANCE = dict(zip(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.,:;!?'\"()-«»’",
    [556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500, 222, 833, 556, 556, 556, 556, 333,
     500, 278, 556, 500, 722, 500, 500, 500, 667, 667, 722, 722, 667, 611, 778, 722, 278, 500,
     667, 556, 833, 722, 778, 667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 278, 278,
     278, 278, 278, 556, 191, 355, 333, 333, 333, 556, 556, 222], strict=True))


def _advance(text: str, mono: float | None) -> float:
    """Expected ink width of a word in em (a little less than its advances)."""
    if mono:
        return len(text) * mono - 0.1
    total = 0
    for c in text:
        base = unicodedata.normalize("NFD", c)[:1]
        total += ADVANCE.get(base, 556)
    return total / 1000 - 0.08


def _shape_factor(text: str) -> float | None:
    """Box height of `text`, in em, for a typical font (None: no letter or digit)."""
    if not any(c.isalnum() for c in text):
        return None
    asc = any(c in ASCENDING or c.isupper() or (c.isalpha() and not c.isascii()) for c in text)
    desc = any(c in DESCENDING for c in text)
    return 0.93 if asc and desc else 0.73 if asc or desc else 0.52


@dataclass(frozen=True)
class GapReading:
    """One unit, the bit read in the gap after it, and what was measured."""

    norm: str
    gap_after: int | None
    same_line: bool  # the next unit is on the same OCR line (else the gap is unobservable)
    z: float | None  # measured gap: 0 at its line's single level, 1 at the doubled level
    left: str = ""  # the OCR tokens on both sides of the gap
    right: str = ""
    joined: bool = False  # a word hyphenated across a line end, joined back into one


@dataclass(frozen=True)
class _Token:
    text: str
    first: OcrWord  # its left edge
    last: OcrWord  # its right edge (another word for a word hyphenated across lines)
    first_line: int  # line indexes of both
    line: int


@dataclass(frozen=True)
class _Gap:
    r: float  # width in em
    line: int
    punct: bool  # punctuation on either side
    mark: bool  # a token of punctuation only on either side
    trusted: bool


def _lines(words: Sequence[OcrWord]) -> list[list[OcrWord]]:
    by_line: dict[tuple[int, int, int, int], list[OcrWord]] = {}
    for w in words:
        by_line.setdefault(w.line, []).append(w)
    return [sorted(ws, key=lambda w: w.left) for ws in by_line.values()]


def _line_ems(lines: list[list[OcrWord]]) -> list[float]:
    """Font size per line: the page's, unless the line's own differs from it by over 20%."""
    per_line = []
    for ws in lines:
        es = []
        for w in ws:
            f = _shape_factor(w.text)
            if f and w.height > 0 and w.conf >= MIN_CONF:
                es.append(w.height / f)
        per_line.append(es)
    every = [e for es in per_line for e in es]
    page = statistics.median(every) if every else 1.0
    out = []
    for es in per_line:
        em = statistics.median(es) if len(es) >= 3 else page
        out.append(page if abs(em / page - 1) < 0.2 else em)
    return out


def _tokens(lines: list[list[OcrWord]]) -> list[_Token]:
    """Raw tokens in reading order; like tokens.clean_excerpt, a word hyphenated at a line end
    ("forecast-" + "ing") is one token."""
    out: list[_Token] = []
    for k, ws in enumerate(lines):
        for i, w in enumerate(ws):
            if (i == 0 and out and out[-1].text[-1:] == "-" and out[-1].text[-2:-1].isalnum()
                    and w.text[:1].isalpha() and w.text[:1].islower()):
                prev = out.pop()
                out.append(_Token(prev.text + w.text, prev.first, w, prev.first_line, k))
            else:
                out.append(_Token(w.text, w, w, k, k))
    return out


def _monospace_pitch(words: Sequence[OcrWord], em: dict[int, float]) -> float | None:
    """Advance per character (em) if the text is set in a monospace font, else None."""
    ratios = sorted(w.width / len(w.text) / em[id(w)] for w in words
                    if len(w.text) >= 5 and w.text.isalpha() and w.conf >= MIN_CONF)
    if len(ratios) < 5:
        return None
    q1, med, q3 = (_quantile(ratios, q) for q in (0.25, 0.5, 0.75))
    # a word's ink is a little narrower than its advances
    return med * 1.03 if (q3 - q1) / med < MONO_SPREAD else None


def _quantile(xs: Sequence[float], q: float) -> float:
    ys = sorted(xs)
    return ys[min(len(ys) - 1, int(q * len(ys)))]


def _fit(rs: list[float], mono: float | None) -> tuple[float, float]:
    """Single level and width of one space (em) from gap widths: two clusters, believed only
    if the upper one is a space away and stands apart; else the median and a typical space."""
    median = statistics.median(rs)
    if mono:
        return median, mono
    split = median + SPACE_PRIOR / 2
    for _ in range(20):
        low = [r for r in rs if r < split]
        high = [r for r in rs if r >= split]
        if len(high) < 2 or len(low) < 2:
            return median, SPACE_PRIOR
        lm, hm = statistics.median(low), statistics.median(high)
        new = (lm + hm) / 2
        if abs(new - split) < 1e-9:
            break
        split = new
    sep = hm - lm
    spread = 1.4826 * statistics.median(abs(r - lm) for r in low)
    valley = sum(1 for r in rs if lm + 0.3 * sep < r < lm + 0.7 * sep)
    if not SPACE_RANGE[0] <= sep <= SPACE_RANGE[1] or sep < 3.5 * spread \
            or valley > len(high) / 3:
        return median, SPACE_PRIOR
    return lm, sep


def _levels(gaps: list[_Gap], n_lines: int, mono: float | None) -> list[tuple[float, float]]:
    """Single level and space width (em) for each line.

    Fitted on the page's natural lines, then checked line by line: a justified line stretches
    every space (NBSP too), so that its gaps sit at b + w and b + 2w for some w wider than a
    space, b = base - sep being the glyph bearings; a natural line's sit at base, base + sep."""
    by_line: dict[int, list[float]] = {}
    for g in gaps:
        if not g.punct:
            by_line.setdefault(g.line, []).append(g.r)
    if not by_line:
        rs = [g.r for g in gaps]
        return [_fit(rs, mono) if rs else (0.0, mono or SPACE_PRIOR)] * n_lines
    low = {k: _quantile(rs, 0.3) for k, rs in by_line.items() if len(rs) >= 3}
    natural_level = _quantile(list(low.values()), 0.2) if low else 0.0
    natural = [r for k, rs in by_line.items()
               if k not in low or low[k] <= natural_level + 0.08 for r in rs]
    base, sep = _fit(natural, mono)
    bearings = base - sep
    levels = [(base, sep)] * n_lines

    def fit_cost(rs: list[float], single: float, width: float) -> tuple[float, float]:
        cost = sum(min(abs(r - single), abs(r - single - width), sep / 2) for r in rs)
        doubled = sum(1 for r in rs if abs(r - single - width) < abs(r - single))
        return cost, doubled / len(rs)

    for k, rs in by_line.items():
        if len(rs) < 4 or low[k] <= base + sep / 4:
            continue
        page_cost, page_doubled = fit_cost(rs, base, sep)
        best = min((c for c in rs if c > base + sep / 4),
                   key=lambda c: fit_cost(rs, c, c - bearings)[0])
        cost, _ = fit_cost(rs, best, best - bearings)
        if cost < page_cost / 2 or (page_doubled > 0.5 and cost <= 1.5 * page_cost):
            levels[k] = (best, best - bearings)
    return levels


def classify_detailed(words: Sequence[OcrWord]) -> list[GapReading]:
    """classify_gaps, with what was measured for each gap."""
    lines = _lines(words)
    ems = _line_ems(lines)
    em_of = {id(w): ems[k] for k, ws in enumerate(lines) for w in ws}
    toks = _tokens(lines)
    units = group_units([t.text for t in toks])
    flat = [w for ws in lines for w in ws]
    mono = _monospace_pitch(flat, em_of)
    width_ratio = {id(w): w.width / (em_of[id(w)] * _advance(w.text, mono)) for w in flat
                   if sum(c.isalnum() for c in w.text) >= 2}
    typical = statistics.median(width_ratio.values()) if width_ratio else 1.0

    def trusted(w: OcrWord) -> bool:
        f = _shape_factor(w.text)
        if w.conf < MIN_CONF:
            return False
        if f is not None and not BOX_FIT[0] <= w.height / (f * em_of[id(w)]) <= BOX_FIT[1]:
            return False
        return abs(width_ratio.get(id(w), typical) / typical - 1) <= WIDTH_FIT

    gaps: list[_Gap | None] = []
    for k, u in enumerate(units):
        j = units[k + 1].first if k + 1 < len(units) else -1
        if j != u.last + 1 or toks[u.last].line != toks[j].first_line:
            gaps.append(None)
            continue
        a, b = toks[u.last], toks[j]
        width = b.first.left - (a.last.left + a.last.width)
        mark = not norm(a.text) or not norm(b.text)
        punct = mark or a.text[-1] in CLOSING or not b.text[0].isalnum()
        gaps.append(_Gap(width / ems[a.line], a.line, punct, mark,
                         trusted(a.last) and trusted(b.first)))

    used = [g for g in gaps if g and g.trusted]
    levels = _levels(used, len(lines), mono)
    seen = statistics.median(ems) if ems else 0.0  # font size in the pixels tesseract read
    out = []
    for k, (u, g) in enumerate(zip(units, gaps, strict=True)):
        joined = any(toks[i].first_line != toks[i].line for i in range(u.first, u.last + 1))
        if g is None:
            out.append(GapReading(u.norm, None, False, None, joined=joined))
            continue
        single, space = levels[g.line]
        z = (g.r - single) / space
        bit: int | None = None
        if not g.trusted or z > TOO_WIDE + (PUNCT_SHIFT if g.punct else 0):
            pass
        elif not g.punct:
            bit = 0 if z <= LO else 1 if z >= HI else None
        elif g.mark and seen >= SMALL_EM:
            bit = 0 if z <= LO_MARK else 1 if z >= HI_MARK else None
        elif seen >= SMALL_EM:
            bit = 0 if z - PUNCT_SHIFT <= LO_PUNCT else 1 if z - PUNCT_SHIFT >= HI_PUNCT else None
        out.append(GapReading(u.norm, bit, True, z, toks[u.last].text,
                              toks[units[k + 1].first].text, joined))
    return out


def classify_gaps(words: Sequence[OcrWord]) -> list[ExcerptWord]:
    """Units of the OCR words (glued as tokens.excerpt_words glues them) with the bit each
    following gap shows: 0 single, 1 doubled, None not read (line end, unsure)."""
    return [ExcerptWord(g.norm, g.gap_after, g.joined) for g in classify_detailed(words)]


def unit_boxes(words: Sequence[OcrWord]) -> list[tuple[str, OcrWord, OcrWord]]:
    """For each unit classify_gaps returns (same order): its text as read, and the OCR words
    at its left and right edges (where the evidence sheet draws the gaps)."""
    toks = _tokens(_lines(words))
    units = group_units([t.text for t in toks])
    return [(" ".join(t.text for t in toks[u.first:u.last + 1]), toks[u.first].first,
             toks[u.last].last) for u in units]
