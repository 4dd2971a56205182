"""What the evidence sheet (`relay decode --report`) adds to a decode, and its example images.

A real SQLite log (the relay's prepare and Store) of one all-staff message (GPL-3 prose,
text/plain + text/html) to N recipients (default 1,000); a 100-word excerpt of one copy.

1. **In process**, alternating, R rounds: `relay.decoding.decode` alone (fresh derivations, as
   each CLI run) against `decode` + building the sheet (`sheetinputs.text_source`,
   `evidence.render`) + writing it; medians and the difference.
2. **End to end**, alternating: `python -m relay decode --json leak.txt` against the same with
   `--report sheet.html`; medians of the wall time of the whole process.
3. With `--examples DIR`: the three README images (a text leak of 100 words with one doubled
   space lost, a screenshot leak of two paragraphs and an inconclusive 35-word leak), each
   sheet made by the CLI and rendered by headless Chromium at 760 px wide, cropped below its
   custody block, as palette PNGs.

    flock /tmp/bench.lock python bench/evidence_sheet.py [--recipients 1000] [--rounds 15]
        [--cli-rounds 7] [--examples docs]
"""

from __future__ import annotations

import argparse
import email
import email.policy
import html
import io
import os
import re
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from email.message import EmailMessage
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from relay import __version__, keys  # noqa: E402
from relay.decoding import decode  # noqa: E402
from relay.evidence import render  # noqa: E402
from relay.fingerprint import prepare  # noqa: E402
from relay.scheme import SCHEME  # noqa: E402
from relay.sheetinputs import Custody, text_source  # noqa: E402
from relay.store import ACCEPTED, Store  # noqa: E402
from relay.tokens import excerpt_words  # noqa: E402

KEY_HEX = "5a" * 32


def paragraphs() -> list[str]:
    text = Path("/usr/share/common-licenses/GPL-3").read_text()
    paras = [re.sub(r"\s+", " ", p).strip() for p in text.split("\n\n")]
    return [p for p in paras if len(p.split()) > 40][4:8]


def body(raw: bytes, ctype: str) -> str:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    return next(p for p in msg.walk() if p.get_content_type() == ctype).get_content()


def window(text: str, start: int, n: int) -> str:
    toks = list(re.finditer(r"\S+", text))
    return text[toks[start].start():toks[start + n - 1].end()]


def make_log(tmp: Path, n: int):  # noqa: ANN201 - the prepared message
    paras = paragraphs()
    m = EmailMessage()
    m["From"] = "ceo@example.com"
    m["To"] = "all-staff@example.com"
    m["Subject"] = "Licensing of the new firmware"
    m["Date"] = "Mon, 23 Nov 2026 10:00:00 +0000"
    m["Message-ID"] = "<firmware-licensing-1@example.com>"
    m.set_content("\n\n".join(textwrap.fill(p, 72) for p in paras))
    m.add_alternative("<html><body>" + "".join(f"<p>{html.escape(p)}</p>\n" for p in paras)
                      + "</body></html>", subtype="html")
    raw = m.as_bytes().replace(b"\n", b"\r\n")
    p = prepare(raw, "ceo@example.com", "k1", bytes.fromhex(KEY_HEX), SCHEME.with_rate(0.16))
    store = Store(tmp / "relay.db")
    store.record_message(**p.log_entry("ceo@example.com"))
    for i in range(n):
        store.set_copy_states(p.identity, [(f"staff{i:04d}@example.com", ACCEPTED, "250 ok")])
    store.close()
    (tmp / "relay.key").write_text(f"k1 {KEY_HEX}\n")
    (tmp / "relay.key").chmod(0o600)
    (tmp / "config.toml").write_text('[store]\npath = "relay.db"\n[signature]\n'
                                     'key_file = "relay.key"\n')
    return p


def in_process(tmp: Path, leak: Path, rounds: int) -> tuple[list[float], list[float]]:
    ring = keys.load(tmp / "relay.key")
    data = leak.read_bytes()
    text = data.decode("utf-8")
    alone, sheet = [], []
    for _ in range(rounds):
        store = Store(tmp / "relay.db", create=False)
        t0 = time.perf_counter()
        decode([excerpt_words(text)], store, ring, 1e-6)
        alone.append(time.perf_counter() - t0)
        store.close()
        store = Store(tmp / "relay.db", create=False)
        t0 = time.perf_counter()
        rep = decode([excerpt_words(text)], store, ring, 1e-6)
        page = render(rep, [text_source(leak.name, data, text)],
                      Custody(__version__, str(tmp / "relay.db"), "now"))
        (tmp / "sheet.html").write_text(page, encoding="utf-8")
        sheet.append(time.perf_counter() - t0)
        store.close()
    return alone, sheet


def cli(tmp: Path, *args: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "relay", "decode", "--json", "--config",
                    str(tmp / "config.toml"), *args], check=True, capture_output=True, env=env)
    return time.perf_counter() - t0


def examples(tmp: Path, p, out: Path) -> None:  # noqa: ANN001
    from PIL import Image
    from render import html_mail, page_height, render_html, screenshot

    out.mkdir(parents=True, exist_ok=True)
    plain = body(p.copy_for("staff0017@example.com"), "text/plain")
    # one doubled space lost on the way, so that the example shows a disagreement too
    (tmp / "leak-text.txt").write_text(window(plain, 10, 100).replace("  ", " ", 1))
    frags = re.findall(r"<p>(.*?)</p>", body(p.copy_for("staff0480@example.com"), "text/html"),
                       re.S)[:2]
    (tmp / "leak-shot.png").write_bytes(render_html(
        html_mail(frags), width=700, height=page_height(14, font_px=15)))
    (tmp / "leak-short.txt").write_text(window(plain, 10, 35))
    for name, src in (("text", "leak-text.txt"), ("screenshot", "leak-shot.png"),
                      ("inconclusive", "leak-short.txt")):
        sheet = tmp / f"{name}.html"
        cli(tmp, "--report", str(sheet), str(tmp / src))
        page = sheet.read_text(encoding="utf-8")
        page = page.replace(str(tmp), "/var/lib/relay")  # no temp paths in the README
        png = screenshot(page, width=760, height=3200, offline=True)
        im = Image.open(io.BytesIO(png)).convert("RGB")
        # crop to the content: the last row that is not white, plus a margin
        grey = im.convert("L").point(lambda v: 255 if v < 250 else 0)
        box = grey.getbbox()
        assert box is not None
        im = im.crop((0, 0, im.width, min(im.height, box[3] + 24)))
        im = im.quantize(colors=128, method=Image.Quantize.FASTOCTREE)
        target = out / f"evidence-{name}.png"
        im.save(target, optimize=True)
        print(f"wrote {target} ({target.stat().st_size // 1024} KiB, {im.width}x{im.height})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipients", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--cli-rounds", type=int, default=7)
    ap.add_argument("--examples", type=Path, help="write the README images to this folder")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-sheet-") as d:
        tmp = Path(d)
        p = make_log(tmp, args.recipients)
        if args.examples:
            examples(tmp, p, args.examples)
            return
        leak = tmp / "leak.txt"
        leak.write_text(window(body(p.copy_for("staff0123@example.com"), "text/plain"), 5, 100))
        words = len(leak.read_text().split())
        alone, sheet = in_process(tmp, leak, args.rounds)
        a, s = statistics.median(alone), statistics.median(sheet)
        print(f"{args.recipients} recipients, {words}-word excerpt, {args.rounds} rounds each, "
              "alternating")
        print(f"in process: decode alone median {a * 1000:.0f} ms, decode + sheet median "
              f"{s * 1000:.0f} ms: the sheet adds {(s - a) * 1000:.0f} ms ({s / a:.2f}x)")
        c_alone, c_sheet = [], []
        for _ in range(args.cli_rounds):
            c_alone.append(cli(tmp, str(leak)))
            c_sheet.append(cli(tmp, "--report", str(tmp / "cli-sheet.html"), str(leak)))
        ca, cs = statistics.median(c_alone), statistics.median(c_sheet)
        print(f"relay decode (whole process, {args.cli_rounds} rounds each): --json median "
              f"{ca * 1000:.0f} ms, --json --report median {cs * 1000:.0f} ms: the sheet adds "
              f"{(cs - ca) * 1000:.0f} ms ({cs / ca:.2f}x); sheet "
              f"{(tmp / 'cli-sheet.html').stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
