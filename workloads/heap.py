# SPDX-License-Identifier: GPL-2.0-or-later
"""A pure-Python heap workload: dicts, lists, strings, json and regex.

Run as `PYTHONMALLOC=malloc python3 heap.py [ROUNDS]` so that every Python
object comes from the C library's malloc (or from a preloaded one). The
output depends only on ROUNDS (default 8): no set of strings is iterated
(their order follows the per-process hash seed), no address or time is
printed. The last line is a digest of everything computed.
"""

import hashlib
import json
import re
import sys

DEFAULT_ROUNDS = 8


class Lcg:
    """A 64-bit linear congruential generator: the same numbers everywhere."""

    def __init__(self, seed):
        self.state = seed & 0xFFFFFFFFFFFFFFFF

    def next(self):
        self.state = (self.state * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
        return self.state >> 33

    def below(self, n):
        return self.next() % n


WORDS = (
    "slab magazine depot cache object reap grow emergency cpu page "
    "alloc free ctor dtor refill flush lock spin atomic batch"
).split()


def make_records(rng, n):
    """A list of dicts with nested lists and strings of varied sizes."""
    out = []
    for i in range(n):
        words = [WORDS[rng.below(len(WORDS))] for _ in range(1 + rng.below(12))]
        out.append(
            {
                "id": i,
                "name": "-".join(words),
                "tags": sorted({w[: 1 + rng.below(len(w))] for w in words}),
                "size": 8 << rng.below(10),
                "weights": [rng.below(1000) / 7 for _ in range(rng.below(16))],
                "note": ("x" * rng.below(200)) + str(rng.next()),
            }
        )
    return out


def word_counts(records):
    counts = {}
    for r in records:
        for w in r["name"].split("-"):
            counts[w] = counts.get(w, 0) + 1
    return counts


PATTERN = re.compile(r"(?P<head>[a-z]+)-(?P<body>[a-z]+(?:-[a-z]+)*)-(?P<tail>[a-z]+)")


def regex_pass(records):
    """Split names with a regex; count matches and collect tails."""
    tails = {}
    matched = 0
    for r in records:
        m = PATTERN.fullmatch(r["name"])
        if m:
            matched += 1
            t = m.group("tail")
            tails[t] = tails.get(t, 0) + len(m.group("body"))
        r["name"] = re.sub(r"[aeiou]", lambda x: x.group(0).upper(), r["name"])
    return matched, tails


def churn(rng, n):
    """Grow and shrink a dict of strings and lists, freeing in mixed order."""
    d = {}
    total = 0
    for i in range(n):
        k = "k%d" % rng.below(n // 4 + 1)
        if k in d and rng.below(3) == 0:
            total += len(d.pop(k))
        else:
            d[k] = [str(i)] * (1 + rng.below(20))
    return total + sum(len(v) for v in d.values()), len(d)


def one_round(r, digest):
    rng = Lcg(0x5EED + r)
    records = make_records(rng, 6000)
    text = json.dumps(records, sort_keys=True)
    back = json.loads(text)
    assert back == records, "json round trip changed the records"
    counts = word_counts(back)
    matched, tails = regex_pass(back)
    removed, kept = churn(rng, 30000)
    back.sort(key=lambda x: (x["size"], x["name"], x["id"]))
    top = ",".join(str(x["id"]) for x in back[:5])
    line = "round %d: json %d bytes, %d words, %d matched, %d tails, churn %d/%d, first %s" % (
        r,
        len(text),
        sum(counts.values()),
        matched,
        len(tails),
        removed,
        kept,
        top,
    )
    digest.update(line.encode())
    digest.update(json.dumps(sorted(tails.items())).encode())
    return line


def main(argv):
    rounds = DEFAULT_ROUNDS
    if len(argv) > 2:
        sys.exit("usage: heap.py [ROUNDS]")
    if len(argv) == 2:
        try:
            rounds = int(argv[1])
        except ValueError:
            sys.exit("heap.py: ROUNDS must be a whole number, got %r" % argv[1])
        if rounds < 1:
            sys.exit("heap.py: ROUNDS must be at least 1, got %d" % rounds)
    digest = hashlib.sha256()
    for r in range(rounds):
        print(one_round(r, digest))
    print("heap.py ok: %d rounds, digest %s" % (rounds, digest.hexdigest()[:16]))


if __name__ == "__main__":
    main(sys.argv)
