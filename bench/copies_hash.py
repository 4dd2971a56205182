"""A SHA-256 over fingerprinted copies of every message in the repository's sample set, to show
that a refactoring left every copy byte-identical: run it against the tree before and after.

The messages: tests/mimesamples.py's `sample_set()` (tests/clients.py shapes, the hand-made
MIME shapes, the announcements, the known-answer vectors, CPython's email corpus) and the
messages bench/speed.py sends. Each is prepared with the relay's default scheme and at rate 0.5;
for several recipients the copy the relay sends (`copy_for`, through the template) and the
reference rendering (`_render`, relay's splicer) are hashed.

    python3 bench/copies_hash.py                        # the relay package of this tree
    python3 bench/copies_hash.py --relay /tmp/before    # another tree's relay package
    python3 bench/copies_hash.py --each                 # also one digest per message
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
KEY = bytes(range(32))
SENDER = "ceo@example.com"
RECIPIENTS = ("a@example.com", "Bob.Martin@Example.COM", "carol@example.org",
              "all-staff@example.com", "x@example.com")


def messages() -> list[tuple[str, bytes]]:
    import mimesamples
    import speed

    random.seed(0)  # the email package's multipart boundaries: the same messages in every run
    out = list(mimesamples.sample_set())
    for k, size in enumerate((30_000, 100_000), 1):
        out.append((f"speed-{size}", speed.text_html_message(size, f"speed-{k}-{size}")))
    out.append(("speed-decode-target", speed.text_html_message(30_000, "decode-target")))
    out.append(("speed-ordinary", speed.ordinary(20_000)))
    paras = speed.other_paragraphs()
    for i in range(3):
        out.append((f"speed-other-{i}", speed.build(paras[5 * i:5 * i + 5], f"other-{i}")))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--relay", type=Path, default=ROOT,
                    help="the tree whose relay package makes the copies (default: this one)")
    ap.add_argument("--each", action="store_true", help="print one digest per message too")
    args = ap.parse_args()
    sys.path[:0] = [str(args.relay.resolve()), str(ROOT / "tests"), str(HERE)]
    import relay
    from relay.fingerprint import prepare
    try:
        from relay.scheme import SCHEME
    except ImportError:  # a tree from before relay.scheme (codes held the Scheme then)
        from relay.codes import SCHEME  # type: ignore[attr-defined, no-redef]

    where = Path(relay.__file__).resolve().parent.parent
    assert where == args.relay.resolve(), f"relay imported from {where}"
    total = hashlib.sha256()
    copies = templated = 0
    msgs = messages()
    for name, raw in msgs:
        h = hashlib.sha256()
        for scheme in (SCHEME, SCHEME.with_rate(0.5)):
            p = prepare(raw, SENDER, "k1", KEY, scheme)
            templated += p._template is not None
            for r in RECIPIENTS:
                for copy in (p.copy_for(r), p._render(p.bits_for(r)) if p._parts else raw):
                    h.update(len(copy).to_bytes(8, "big") + copy)
                    copies += 1
        total.update(name.encode() + b"\0" + h.digest())
        if args.each:
            print(f"{h.hexdigest()}  {name}")
    print(f"relay from {where}: {len(msgs)} messages, {copies} copies "
          f"({templated} preparations with a template)")
    print(f"sha256 {total.hexdigest()}")


if __name__ == "__main__":
    main()
