"""The evidence sheet (`relay decode --report`): made by the real CLI from a real log, opened in
headless Chromium without a network (DOM, screenshot, print to PDF), the PDF checked with
poppler's pdfinfo, pdftotext and pdftoppm."""

from __future__ import annotations

import base64
import email
import email.policy
import hashlib
import html
import io
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from email.message import EmailMessage
from pathlib import Path

import pytest
from PIL import Image, ImageChops
from render import (
    chromium_path,
    dump_dom,
    html_mail,
    page_height,
    print_pdf,
    render_html,
    screenshot,
)

from relay.fingerprint import prepare
from relay.scheme import SCHEME
from relay.store import ACCEPTED, Store

ROOT = Path(__file__).resolve().parent.parent
KEY_HEX = "5a" * 32
N_RCPTS = 400
MESSAGE_ID = "<licensing-1." + "0123456789abcdef" * 8 + "@example.com>"  # unbroken, 155 chars
pytestmark = pytest.mark.skipif(
    chromium_path() is None or shutil.which("tesseract") is None
    or shutil.which("pdftoppm") is None,
    reason="needs chromium, tesseract and poppler-utils (bash .ci/install-system-deps)")


def paragraphs() -> list[str]:
    text = Path("/usr/share/common-licenses/GPL-3").read_text()
    paras = [re.sub(r"\s+", " ", p).strip() for p in text.split("\n\n")]
    return [p for p in paras if len(p.split()) > 40][4:8]


def body(raw: bytes, ctype: str) -> str:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    return next(p for p in msg.walk() if p.get_content_type() == ctype).get_content()


def words_window(text: str, start: int, n: int) -> str:
    toks = list(re.finditer(r"\S+", text))
    return text[toks[start].start():toks[start + n - 1].end()]


class Logged:
    """A real log of one all-staff message and a config for `relay decode`."""

    def __init__(self, tmp: Path) -> None:
        paras = paragraphs()
        m = EmailMessage()
        m["From"] = "ceo@example.com"
        m["To"] = "all-staff@example.com"
        m["Subject"] = "Licensing <update> & more"
        m["Date"] = "Mon, 23 Nov 2026 10:00:00 +0000"
        m["Message-ID"] = MESSAGE_ID
        m.set_content("\n\n".join(textwrap.fill(p, 72) for p in paras))
        m.add_alternative("<html><body>" + "".join(f"<p>{html.escape(p)}</p>\n" for p in paras)
                          + "</body></html>", subtype="html")
        raw = m.as_bytes().replace(b"\n", b"\r\n")
        p = prepare(raw, "ceo@example.com", "k1", bytes.fromhex(KEY_HEX), SCHEME.with_rate(0.16))
        store = Store(tmp / "relay.db")
        store.record_message(**p.log_entry("ceo@example.com"))
        self.recipients = [f"staff{i:04d}@example.com" for i in range(N_RCPTS)]
        for r in self.recipients:
            store.set_copy_states(p.identity, [(r, ACCEPTED, "250 ok")])
        store.close()
        (tmp / "relay.key").write_text(f"k1 {KEY_HEX}\n")
        (tmp / "relay.key").chmod(0o600)
        (tmp / "config.toml").write_text('[store]\npath = "relay.db"\n[signature]\n'
                                         'key_file = "relay.key"\n')
        self.tmp = tmp
        self.prepared = p

    def plain(self, r: str) -> str:
        return body(self.prepared.copy_for(r), "text/plain")

    def html(self, r: str) -> str:
        return body(self.prepared.copy_for(r), "text/html")

    def decode(self, *files: Path, sheet: str) -> tuple[dict, str]:
        out = self.tmp / sheet
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        p = subprocess.run([sys.executable, "-m", "relay", "decode", "--json", "--config",
                            str(self.tmp / "config.toml"), "--report", str(out),
                            *map(str, files)], capture_output=True, text=True, timeout=300,
                           env=env, check=False)
        assert p.returncode == 0, p.stderr
        assert out.stat().st_mode & 0o077 == 0  # names recipients: private like the log
        return json.loads(p.stdout), out.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Logged:
    return Logged(tmp_path_factory.mktemp("sheet"))


@pytest.fixture(scope="module")
def text_case(logged: Logged) -> tuple[dict, str, str, str]:
    """100 words of staff0017's plain copy with one doubled gap lost."""
    leaker = logged.recipients[17]
    ex = words_window(logged.plain(leaker), 10, 100).replace("  ", " ", 1)
    f = logged.tmp / "leak.txt"
    f.write_text(ex)
    rep, page = logged.decode(f, sheet="text.html")
    return rep, page, leaker, ex


@pytest.fixture(scope="module")
def shot_case(logged: Logged) -> tuple[dict, str, str]:
    leaker = logged.recipients[211]
    frags = re.findall(r"<p>(.*?)</p>", logged.html(leaker), re.S)[:2]
    png = render_html(html_mail(frags), width=700, height=page_height(16, font_px=15))
    f = logged.tmp / "leak.png"
    f.write_bytes(png)
    rep, page = logged.decode(f, sheet="shot.html")
    return rep, page, leaker


def marks(dom: str, counted: str = "1") -> list[str]:
    """data-gap ids of the marks in a DOM that Chromium serialised (attributes in "")."""
    return re.findall(rf'data-gap="(\d+:\d+)" data-counted="{counted}"', dom)


def refs(page: str) -> list[str]:
    """Every URL the page could fetch: src/href attributes and CSS url()."""
    return re.findall(r"""(?:src|href)\s*=\s*['"]([^'"]*)""", page) + re.findall(
        r"url\(([^)]*)\)", page)


def shown_text(dom: str, cls: str = "excerpt") -> str:
    m = re.search(rf'<div class="{cls}">(.*?)</div>', dom, re.S)
    assert m is not None
    return html.unescape(re.sub(r"<[^>]+>", "", m.group(1)))


def test_text_sheet_marks_every_gap_read(text_case: tuple[dict, str, str, str]) -> None:
    rep, page, leaker, ex = text_case
    assert rep["verdict"] == "identified" and rep["candidates"][0]["recipient"] == leaker
    top = rep["candidates"][0]
    dom = dump_dom(page, offline=True)
    assert "IDENTIFIED" in dom and leaker in dom
    ids = marks(dom)
    assert len(ids) == len(set(ids)) == top["bits_observed"] == len(rep["gaps"])
    assert marks(dom, "0") == []
    ok = dom.count('class="gap ok" data-gap')
    bad = dom.count('class="gap bad" data-gap')
    assert (ok, bad) == (top["bits_matching"], top["bits_observed"] - top["bits_matching"])
    assert bad == 1  # the doubled gap lost
    assert shown_text(dom) == ex.replace("\r\n", "\n")  # every word and space in place
    # nothing to fetch, nothing to run
    assert all(u.startswith(("data:", "#")) for u in refs(page)), refs(page)
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert "default-src 'none'" in page
    for key in (html.escape(MESSAGE_ID), "ceo@example.com",
                "Licensing &lt;update&gt; &amp; more", "Custody", "SHA-256", "relay version"):
        assert key in page, key


def test_json_keeps_its_keys_and_adds_the_gaps(text_case: tuple[dict, str, str, str]) -> None:
    rep, _page, leaker, ex = text_case
    assert set(rep) == {"verdict", "message", "candidates", "other_messages", "excerpts",
                        "recipients_scored", "threshold", "provenance", "gaps"}
    assert set(rep["message"]) == {"message_id", "subject", "date"}
    assert set(rep["candidates"][0]) == {"recipient", "bits_observed", "bits_matching",
                                         "false_match_probability"}
    words = ex.split()
    for g in rep["gaps"]:
        assert g["excerpt"] == 0 and g["counted"] and g["class"] in ("word", "sentence")
        k = g["word"]
        assert [re.sub(r"\W", "", w).lower() for w in words[k:k + 2]] == g["between"]
        gap = re.split(r"(\s+)", ex)[2 * k + 1]
        assert g["observed"] == (1 if gap == "  " else 0)
    assert sum(g["observed"] == g["named"] for g in rep["gaps"]) == \
        rep["candidates"][0]["bits_matching"]


def pdf_pages(pdf: bytes, tmp: Path, dpi: int = 40) -> tuple[str, list[Image.Image], str]:
    tmp.mkdir()
    f = tmp / "sheet.pdf"
    f.write_bytes(pdf)
    info = subprocess.run(["pdfinfo", str(f)], capture_output=True, text=True, check=True).stdout
    subprocess.run(["pdftoppm", "-gray", "-r", str(dpi), str(f), str(tmp / "p")], check=True)
    pages = [Image.open(p) for p in sorted(tmp.glob("p-*.pgm"))]
    text = subprocess.run(["pdftotext", "-layout", str(f), "-"], capture_output=True,
                          text=True, check=True).stdout
    return info, pages, text


def ink_near_edges(im: Image.Image, mm: float, dpi: int) -> bool:
    px = round(mm / 25.4 * dpi)
    w, h = im.size
    dark = im.point(lambda v: 255 if v < 200 else 0)
    return any(dark.crop(box).getbbox() is not None for box in (
        (0, 0, px, h), (w - px, 0, w, h), (0, 0, w, px), (0, h - px, w, h)))


@pytest.mark.parametrize("size,points", [("A4", (595, 842)), ("letter", (612, 792))])
def test_sheets_print_whole_on_a4_and_letter(
        text_case: tuple[dict, str, str, str], shot_case: tuple[dict, str, str],
        tmp_path: Path, size: str, points: tuple[int, int]) -> None:
    for n, (rep, page) in enumerate([text_case[:2], shot_case[:2]]):
        sized = page.replace("<style>", f"<style>@page {{ size: {size}; }}", 1)
        info, pages, text = pdf_pages(print_pdf(sized, offline=True), tmp_path / str(n))
        w, h = map(float, re.findall(r"Page size: +([\d.]+) x ([\d.]+)", info)[0])
        assert abs(w - points[0]) < 2 and abs(h - points[1]) < 2, info
        assert 1 <= len(pages) <= 4
        for im in pages:  # the page margins (13-14 mm) stay blank: nothing ran off the paper
            assert not ink_near_edges(im, 9, 40)
        flat = re.sub(r"\s+", "", text)
        for sha in re.findall(r"class='hash'>([0-9a-f]{64})<", page):
            assert sha in flat  # long unbroken strings wrap rather than run off the page
        assert "Whatthissheetshows" in flat  # the last line: nothing lost at the end
        assert re.sub(r"\s+", "", rep["candidates"][-1]["recipient"]) in flat
        assert MESSAGE_ID in flat


def test_screenshot_sheet_shows_the_image_with_the_marks(
        shot_case: tuple[dict, str, str]) -> None:
    rep, page, leaker = shot_case
    assert rep["verdict"] == "identified" and rep["candidates"][0]["recipient"] == leaker
    n = rep["candidates"][0]["bits_observed"]
    dom = dump_dom(page, offline=True)
    on_image = re.findall(r'<g class="gap \w+" data-gap="(\d+:\d+)"', dom)
    assert len(on_image) == len(set(on_image)) == n
    assert set(on_image) == set(marks(dom))  # the same gaps as on the OCR text
    assert 'href="data:image/png;base64,' in dom and "</style>" in page

    def shot(p: str) -> Image.Image:
        # what follows the figure (the OCR text) is hidden, its place kept: two screenshots of
        # the same page were seen to differ there (Chromium painting the lowest lines late)
        p = p.replace("</style>", "figure.shot ~ * { visibility: hidden }</style>", 1)
        return Image.open(io.BytesIO(screenshot(p, width=900, height=1400, offline=True))) \
            .convert("RGB")

    full = shot(page)
    no_image = shot(re.sub(r"<image [^>]*/>", "", page))
    no_marks = shot(re.sub(r"<g class='gap[^']*'[^>]*>.*?</g>", "", page))
    # the image's whole box on the page: the same image, every pixel black (the difference
    # with `no_image` of the real image covers only its ink, and a mark may sit where a line
    # ends, past the ink of the longest line)
    (mime, data), = re.findall(r"<image href='data:([^;]+);base64,([^']+)'", page)
    size = Image.open(io.BytesIO(base64.b64decode(data))).size
    black = io.BytesIO()
    Image.new("RGB", size, "black").save(black, "PNG")
    solid = page.replace(f"data:{mime};base64,{data}",
                         "data:image/png;base64," + base64.b64encode(black.getvalue()).decode())
    ink_box = ImageChops.difference(full, no_image).getbbox()
    img_box = ImageChops.difference(shot(solid), no_image).getbbox()
    mark_box = ImageChops.difference(full, no_marks).getbbox()
    assert ink_box is not None and mark_box is not None  # the image shows, and so do marks
    assert img_box is not None and (img_box[2] - img_box[0]) * (img_box[3] - img_box[1]) > 100_000
    slack = 8
    assert (mark_box[0] >= img_box[0] - slack and mark_box[1] >= img_box[1] - slack
            and mark_box[2] <= img_box[2] + slack and mark_box[3] <= img_box[3] + slack)


def test_inconclusive_sheet_says_why_and_what_would_help(logged: Logged) -> None:
    leaker = logged.recipients[5]
    f = logged.tmp / "short.txt"
    f.write_text(words_window(logged.plain(leaker), 30, 30))
    rep, page = logged.decode(f, sheet="short.html")
    assert rep["verdict"] == "inconclusive"
    dom = dump_dom(page, offline=True)
    assert "INCONCLUSIVE" in dom and "Nobody is named" in dom
    assert "Too few gaps were read" in dom and "What would help" in dom
    assert "a longer excerpt" in dom and "the original screenshot or file" in dom
    assert len(set(marks(dom))) == rep["candidates"][0]["bits_observed"]


def test_no_match_sheet_says_why(logged: Logged) -> None:
    f = logged.tmp / "other.txt"
    text = Path("/usr/share/common-licenses/Apache-2.0").read_text()
    f.write_text(" ".join(text.split()[200:300]))
    rep, page = logged.decode(f, sheet="other.html")
    assert rep["verdict"] == "no_match" and rep["gaps"] == []
    dom = dump_dom(page, offline=True)
    assert "NO MATCH" in dom and "What would help" in dom and "keep_days" in dom
    assert marks(dom) == [] and "How the recipients compare" not in dom
    assert shown_text(dom).split() == f.read_text().split()


def test_pooled_excerpts_count_a_gap_once(logged: Logged) -> None:
    leaker = logged.recipients[99]
    text = logged.plain(leaker)
    a, b = logged.tmp / "a.txt", logged.tmp / "b.txt"
    a.write_text(words_window(text, 0, 50))
    b.write_text(words_window(text, 30, 50))  # 20 words in common
    rep, page = logged.decode(a, b, sheet="pooled.html")
    dom = dump_dom(page, offline=True)
    counted, repeats = marks(dom), marks(dom, "0")
    assert len(counted) == rep["candidates"][0]["bits_observed"]
    assert repeats and all(r.startswith("1:") for r in repeats)
    assert len(counted) + len(repeats) == sum(e["bits_observed"] for e in rep["excerpts"])
    assert "Excerpt 2" in dom and "Pooled" in dom


def test_sheet_names_no_one_beyond_the_candidates(
        text_case: tuple[dict, str, str, str], logged: Logged) -> None:
    rep, page, _leaker, _ex = text_case
    listed = {c["recipient"] for c in rep["candidates"]}
    named = set(re.findall(r"staff\d{4}@example\.com", page))
    assert named == listed


def test_standard_input_is_named_so_and_hashed(logged: Logged) -> None:
    text = words_window(logged.plain(logged.recipients[3]), 40, 80).encode()
    out = logged.tmp / "stdin.html"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "relay", "decode", "--config",
                        str(logged.tmp / "config.toml"), "--report", str(out), "-"],
                       input=text, capture_output=True, timeout=300, env=env, check=False)
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode().startswith("Verdict: IDENTIFIED")  # the text report as before
    page = out.read_text(encoding="utf-8")
    assert "(standard input) (text, " in page
    assert hashlib.sha256(text).hexdigest() in page
