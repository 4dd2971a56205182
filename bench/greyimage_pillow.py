"""Pillow against the standard-library PNG decoder and 2x magnifier, as read by Tesseract.

For tests/test_ocr.py's screenshots (same seeds, same conditions) and the three screenshots of
tests/test_decode_image.py, each decoder variant is put in front of the real Tesseract driver
(relay.ocr.run_tesseract) and the gaps are read and scored as the tests score them:

- `before`: relay/greyimage.py as of --before-rev (the hand-written PNG decoder, its corner-
  aligned bilinear magnifier; other formats with Pillow then the same magnifier);
- `now`: relay/greyimage.py of this tree;
- `pil-<filter>`: Pillow decodes every format (over white, to grey) and magnifies with
  Image.resize and that filter;
- `pil-<filter>-corner`: the same, output pixel 2i on input pixel i (the hand-written
  magnifier's alignment) instead of Pillow's centre alignment;
- `jpeg-1x`: JPEG read as it is (never magnified), for the JPEG conditions.

Tesseract runs are memoised on the bytes it is given, so variants that give it the same image
cost one run and are reported as `same input`. Run under the bench lock:

    flock /tmp/bench.lock python3 bench/greyimage_pillow.py [--variants before,now,pil-bilinear]

`--hostile` instead measures, in a fresh interpreter per input, the peak RSS and CPU time of
decode_grey on a zlib bomb, a huge PNG, a truncated PNG, a JPEG claiming 144 MP and a non-image,
for greyimage at --before-rev and in this tree.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from contextlib import redirect_stdout
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from relay import greyimage, ocr  # noqa: E402
from relay.ocrgaps import classify_detailed  # noqa: E402

Decode = Callable[..., "tuple[int, int, bytes] | None"]
Magnify = Callable[[int, int, bytes], bytes]
FILTERS = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
           "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS,
           "hamming": Image.Resampling.HAMMING, "box": Image.Resampling.BOX}


def module_at(rev: str):  # noqa: ANN201
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:relay/greyimage.py"],
                         capture_output=True, check=True).stdout
    path = Path(tempfile.mkdtemp(prefix="greyimage-")) / "greyimage_before.py"
    path.write_bytes(src)
    spec = importlib.util.spec_from_file_location("greyimage_before", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def pil_decode(image: bytes, max_rows: int | None = None) -> tuple[int, int, bytes] | None:
    try:
        with Image.open(io.BytesIO(image)) as im:
            if greyimage.too_large(im.width, im.height) or im.width * im.height > 12_000_000:
                return None
            im.load()
            if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
                rgba = im.convert("RGBA")
                im = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
            grey = im.convert("L")
            if max_rows is not None and grey.height > max_rows:
                grey = grey.crop((0, 0, grey.width, max_rows))
            return grey.width, grey.height, grey.tobytes()
    except (OSError, ValueError, SyntaxError, EOFError):
        return None


def pil_magnify(resample: Image.Resampling, corner: bool = False) -> Magnify:
    """corner: output pixel 2i sits on input pixel i (as the hand-written magnifier), not
    centre-aligned (Pillow's default: a quarter of an input pixel to the left and up)."""
    def pgm2x(width: int, height: int, grey: bytes) -> bytes:
        im = Image.frombytes("L", (width, height), grey)
        box = None
        if corner:  # one more column and row, repeating the last, to interpolate towards
            pad = Image.new("L", (width + 1, height + 1))
            pad.paste(im, (0, 0))
            pad.paste(im.crop((width - 1, 0, width, height)), (width, 0))
            pad.paste(pad.crop((0, height - 1, width + 1, height)), (0, height))
            im, box = pad, (0.25, 0.25, width + 0.25, height + 0.25)
        big = im.resize((2 * width, 2 * height), resample, box=box)
        return b"P5\n%d %d\n255\n" % big.size + big.tobytes()
    return pgm2x


TSV_CACHE: dict[tuple[str, str, int], list] = {}
TSV_SECONDS = [0.0, 0]
_real_tsv = ocr._tsv


def memo_tsv(exe: str, image: bytes, languages: str, scale: int) -> list:
    key = (hashlib.sha256(image).hexdigest(), languages, scale)
    if key not in TSV_CACHE:
        t0 = time.monotonic()
        TSV_CACHE[key] = _real_tsv(exe, image, languages, scale)
        TSV_SECONDS[0] += time.monotonic() - t0
        TSV_SECONDS[1] += 1
    INPUTS.append(key[0][:12])
    return TSV_CACHE[key]


INPUTS: list[str] = []


def use(decode: Decode, magnify: Magnify) -> None:
    ocr.decode_grey = decode  # type: ignore[assignment]
    ocr.pgm2x = magnify  # type: ignore[assignment]


def variants(names: list[str], rev: str) -> dict[str, tuple[Decode, Magnify, bool | None]]:
    out: dict[str, tuple[Decode, Magnify, bool | None]] = {}
    for n in names:
        if n == "before":
            old = module_at(rev)
            out[n] = (old.decode_grey, old.pgm2x, None)
        elif n == "now":
            out[n] = (greyimage.decode_grey, greyimage.pgm2x, None)
        elif n == "jpeg-1x":
            out[n] = (greyimage.decode_grey, greyimage.pgm2x, False)
        elif n.startswith("pil-"):
            name, corner = n[4:].removesuffix("-corner"), n.endswith("-corner")
            out[n] = (pil_decode, pil_magnify(FILTERS[name], corner), None)
        else:
            raise SystemExit(f"unknown variant {n}")
    return out


def ocr_images(vs: dict, only: set[str] | None, seed: int) -> list[dict]:
    """tests/test_ocr.py's conditions; its own images with seed 11 (the unmarked one: 12)."""
    import test_ocr as t

    marked = t.make_paragraphs(seed=seed)
    makers = {name: (lambda make=make: make(marked)) for name, (make, _, _) in
              t.CONDITIONS.items()}
    makers[t.UNMARKED] = lambda: t.html_shot(t.make_paragraphs(seed=seed + 1, p_word=0,
                                                               p_sentence=0), 2)
    rows = []
    for cond, make in makers.items():
        if only and cond not in only:
            continue
        shot = make()
        for vname, (decode, magnify, force) in vs.items():
            if force is False and "jpeg" not in cond:
                continue
            use(decode, magnify)
            INPUTS.clear()
            t0 = time.monotonic()
            s = t.score(classify_detailed(ocr.run_tesseract(shot.image, magnify=force)),
                        shot.truth)
            rows.append({"image": cond, "seed": seed, "variant": vname, "gaps": s.gaps,
                         "correct": s.correct, "wrong": s.wrong, "unread": s.unread,
                         "doubled": s.doubled, "doubled_correct": s.doubled_correct, "lost": s.lost,
                         "input": "+".join(INPUTS), "s": round(time.monotonic() - t0, 1)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def decode_images(vs: dict) -> list[dict]:
    """test_decode_image.py's three screenshots, decoded in process by `relay decode --json`."""
    import html as htmlmod
    import re
    from email.message import EmailMessage

    import test_decode_image as d
    from render import html_mail, page_height, plain_mail, render_html

    from relay import cli
    from relay.fingerprint import prepare
    from relay.scheme import SCHEME
    from relay.store import ACCEPTED, Store

    tmp = Path(tempfile.mkdtemp(prefix="greyimage-decode-"))
    paras = d.paragraphs()
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = "ceo@example.com", "all-staff@example.com", "Licensing"
    m.set_content("\n\n".join(textwrap.fill(p, 72) for p in paras))
    m.add_alternative("<html><body>" + "".join(f"<p>{htmlmod.escape(p)}</p>\n" for p in paras)
                      + "</body></html>", subtype="html")
    key = bytes.fromhex(d.KEY_HEX)
    p = prepare(m.as_bytes().replace(b"\n", b"\r\n"), "ceo@example.com", "k1", key,
                SCHEME.with_rate(0.16))
    store = Store(tmp / "relay.db")
    store.record_message(**p.log_entry("ceo@example.com"))
    rcpts = [f"staff{i:04d}@example.com" for i in range(1000)]
    for r in rcpts:
        store.set_copy_states(p.identity, [(r, ACCEPTED, "250 ok")])
    store.close()
    (tmp / "relay.key").write_text(f"k1 {d.KEY_HEX}\n")
    (tmp / "relay.key").chmod(0o600)
    (tmp / "config.toml").write_text('[store]\npath = "relay.db"\n[signature]\n'
                                     'key_file = "relay.key"\n')
    copies = {r: p.copy_for(r) for r in (rcpts[17], rcpts[480], rcpts[999])}
    leakers = sorted(copies)
    shots = {}
    for scale, fmt, who in [(1, "png", 0), (2, "jpg", 1)]:
        frags = re.findall(r"<p>(.*?)</p>", d.part(copies[leakers[who]], "text/html"),
                           re.S)[:3]
        shots[f"decode html {scale}x {fmt}"] = (leakers[who], render_html(
            html_mail(frags), width=700, height=page_height(24, font_px=15), scale=scale,
            fmt=fmt))
    text = d.part(copies[leakers[2]], "text/plain")
    excerpt = "\n\n".join(text.split("\n\n")[:2])
    shots["decode mono 1x png"] = (leakers[2], render_html(
        plain_mail(excerpt, monospace=True), width=760,
        height=page_height(excerpt.count("\n") + 3, font_px=14)))
    rows = []
    for name, (leaker, image) in shots.items():
        path = tmp / (name.replace(" ", "_") + "." + name.rsplit(" ", 1)[1])
        path.write_bytes(image)
        for vname, (decode, magnify, force) in vs.items():
            if force is False:
                if "jpg" not in name:
                    continue
                decode = lambda image, max_rows=None: None  # noqa: E731 (read as it is)
            use(decode, magnify)
            INPUTS.clear()
            out = io.StringIO()
            with redirect_stdout(out):
                rc = cli.main(["decode", "--json", "--config", str(tmp / "config.toml"),
                               str(path)])
            rep = json.loads(out.getvalue())
            top = rep["candidates"][0] if rep["candidates"] else {}
            rows.append({"image": name, "variant": vname, "rc": rc, "verdict": rep["verdict"],
                         "named_leaker": top.get("recipient") == leaker,
                         "bits_observed": top.get("bits_observed"),
                         "bits_matching": top.get("bits_matching"),
                         "input": "+".join(INPUTS)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


HOSTILE = {
    "zlib bomb: 1,000 x 100 header, 100 MB of rows": "bombs.png_bomb(1_000, 100, rows=100_000)",
    "honest 1,000 x 100 PNG (reference)": "bombs.png_bomb(1_000, 100)",
    "honest 3,000 x 3,000 PNG (reference: 9 MP decoded)": "bombs.png_bomb(3_000, 3_000)",
    "20,000 x 20,000 PNG inflating fully": "bombs.png_bomb(20_000, 20_000)",
    "truncated PNG (1,000 x 100 noise, cut in half)": "noise_png()[:50_000]",
    "JPEG claiming 12,000 x 12,000": "bombs.jpeg_claiming(12_000, 12_000)",
    "not an image": "b'GIF89a' + bytes(100)",
}
PROBE = """
import resource, sys, time
sys.path[:0] = [{tests!r}, {root!r}]
from pngs import encode_png
{load}
grey.decode_grey(encode_png(2, 2, 2, bytes(12)))  # Pillow's plugins imported: not counted
data = open({path!r}, "rb").read()
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.process_time()
out = grey.decode_grey(data)
cpu = time.process_time() - t0
rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(rss1, rss1 - rss0, f"{{cpu * 1000:.1f}}", "None" if out is None else f"{{out[0]}}x{{out[1]}}")
"""


def noise_png() -> bytes:
    import random

    buf = io.BytesIO()
    Image.frombytes("L", (1_000, 100), random.Random(1).randbytes(100_000)).save(buf, "PNG")
    return buf.getvalue()


def hostile(rev: str) -> None:
    """Peak RSS and CPU time of decode_grey on hostile inputs, each in a fresh interpreter
    (the input read from a file first), for greyimage at `rev` and in this tree."""
    import bombs

    tmp = Path(tempfile.mkdtemp(prefix="greyimage-"))
    before = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:relay/greyimage.py"],
                            capture_output=True, check=True).stdout
    (tmp / "greyimage_before.py").write_bytes(before)
    loads = {"before": f"import importlib.util as u; s = u.spec_from_file_location('g', "
                       f"{str(tmp / 'greyimage_before.py')!r}); grey = u.module_from_spec(s); "
                       f"s.loader.exec_module(grey)",
             "now": "from relay import greyimage as grey"}
    print("| input | file bytes | decoder | peak RSS (MiB) | RSS growth in decode (MiB) | "
          "CPU ms | result |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for i, (what, make) in enumerate(HOSTILE.items()):
        data = eval(make, {"bombs": bombs, "noise_png": noise_png})  # noqa: S307 (the table above)
        path = tmp / f"input{i}"
        path.write_bytes(data)
        for name, load in loads.items():
            code = PROBE.format(tests=str(ROOT / "tests"), root=str(ROOT), load=load,
                                path=str(path))
            peak, grew, ms, result = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True
            ).stdout.split()
            print(f"| {what} | {len(data):,} | {name} | {int(peak) / 1024:.1f} | "
                  f"{int(grew) / 1024:.1f} | {ms} | {result} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", default="before,pil-bilinear,pil-bicubic,pil-lanczos,jpeg-1x")
    ap.add_argument("--before-rev", default="347dbd8")
    ap.add_argument("--conditions", default="", help="comma list of test_ocr conditions")
    ap.add_argument("--seeds", default="11", help="paragraph seeds (11: the test's images)")
    ap.add_argument("--no-decode", action="store_true")
    ap.add_argument("--json", default="", help="write all rows to this file")
    ap.add_argument("--hostile", action="store_true", help="only the hostile-image probe")
    a = ap.parse_args()
    if a.hostile:
        hostile(a.before_rev)
        return
    ocr._tsv = memo_tsv  # type: ignore[assignment]
    vs = variants(a.variants.split(","), a.before_rev)
    t0 = time.monotonic()
    rows = []
    for seed in map(int, a.seeds.split(",")):
        rows += ocr_images(vs, set(a.conditions.split(",")) if a.conditions else None, seed)
    if not a.no_decode:
        rows += decode_images(vs)
    print(f"# {TSV_SECONDS[1]} tesseract runs, {TSV_SECONDS[0]:.0f} s; total "
          f"{time.monotonic() - t0:.0f} s")
    totals: dict[tuple[str, str], list[int]] = {}
    for r in rows:
        if "gaps" in r:
            tot = totals.setdefault((r["image"], r["variant"]), [0, 0, 0, 0, 0])
            for i, k in enumerate(("gaps", "correct", "wrong", "unread", "lost")):
                tot[i] += r[k]
    print("| image (all seeds) | variant | gaps | correct | wrong | unread | words lost |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for (image, vname), (g, c, w, u, lost) in totals.items():
        print(f"| {image} | {vname} | {g} | {c} ({c / g:.1%}) | {w} ({w / g:.1%}) | "
              f"{u} ({u / g:.1%}) | {lost} |")
    print("| image | variant | gaps | correct | wrong | unread | doubled read | input |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        if "gaps" in r:
            g = r["gaps"] or 1
            print(f"| {r['image']} {r['seed']} | {r['variant']} | {r['gaps']} | "
                  f"{r['correct'] / g:.1%} | "
                  f"{r['wrong'] / g:.1%} | {r['unread'] / g:.1%} | "
                  f"{r['doubled_correct']}/{r['doubled']} | {r['input']} |")
        else:
            print(f"| {r['image']} | {r['variant']} | {r['verdict']} (leaker "
                  f"{'named' if r['named_leaker'] else 'NOT named'}) | "
                  f"{r['bits_matching']}/{r['bits_observed']} match | | | | {r['input']} |")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
