"""Scores labelled captures for benches/learn_quality.sh.

Reads a manifest (one capture a line, tab-separated: name, flows file written
by `phantomc learn --dump-flows`, attackers, sources phantomc proposed to
block, sources Zeek's notices name or `-` without a Zeek baseline; lists are
comma-separated) and prints precision, recall and false positives per capture
and in total for phantomc, an IsolationForest over per-source features (the
approach phantomc replaces) and Zeek.

The IsolationForest is fitted once on the sources of every capture together
(scikit-learn defaults, contamination "auto", random_state 0) on the same
eight per-source features as phantomc's advisory ranking (src/learn/score.rs).
"""

import json
import math
import sys
from collections import defaultdict

from sklearn.ensemble import IsolationForest

TCP, ICMP, ICMPV6 = 6, 1, 58
ANSWERED = {"S1", "SF", "S2", "S3", "RSTO", "RSTR"}


def host(endpoint):
    """`1.2.3.4:80` or `[::1]:80` -> the address."""
    return endpoint.rsplit(":", 1)[0].strip("[]")


def answered(f):
    if f["icmp_error"] is not None and f["resp"]["packets"] == 0:
        return False
    return f["state"] in ANSWERED


def features(flows_path):
    """Per-source features, as in src/learn/score.rs."""
    acc = defaultdict(lambda: dict(n=0, failed=0, tcp=0, half=0, icmp_err=0, bytes=0, hosts=set(), ports=set(),
                                   first=math.inf, last=0))
    with open(flows_path) as fh:
        for line in fh:
            f = json.loads(line)
            if not f["attempt_seen"]:
                continue
            a = acc[host(f["client"])]
            c = f["connections"]
            a["n"] += c
            a["failed"] += c if not answered(f) else 0
            if f["proto"] == TCP:
                a["tcp"] += c
                done = answered(f) and ("A" in f["history"] or "D" in f["history"])
                a["half"] += 0 if done else c
            a["icmp_err"] += c if f["icmp_error"] is not None else 0
            a["bytes"] += f["orig"]["bytes"] + f["resp"]["bytes"]
            a["hosts"].add(host(f["server"]))
            a["ports"].add((f["proto"], f["server"].rsplit(":", 1)[1]))
            a["first"] = min(a["first"], f["first_seen_us"])
            a["last"] = max(a["last"], f["last_seen_us"])
    out = {}
    for ip, a in acc.items():
        n = a["n"]
        secs = max((a["last"] - a["first"]) / 1e6, 1.0)
        out[ip] = [
            math.log1p(n),
            math.log1p(len(a["hosts"])),
            math.log1p(len(a["ports"])),
            a["failed"] / n,
            a["half"] / a["tcp"] if a["tcp"] else 0.0,
            math.log1p(n / secs),
            math.log1p(a["bytes"] / n),
            a["icmp_err"] / n,
        ]
    return out


def split(field):
    return set() if field in ("", "-") else set(field.split(","))


def score(flagged, attackers, sources):
    flagged &= sources | attackers
    tp, fp, fn = len(flagged & attackers), len(flagged - attackers), len(attackers - flagged)
    return tp, fp, fn


def fmt(tp, fp, fn):
    precision = f"{tp / (tp + fp):.2f}" if tp + fp else "-"
    recall = f"{tp / (tp + fn):.2f}" if tp + fn else "-"
    return f"{precision:>5} {recall:>5} {fp:>4}"


def main(manifest):
    rows = []
    for line in open(manifest):
        name, flows, attackers, phantomc, zeek = line.rstrip("\n").split("\t")
        rows.append((name, features(flows), split(attackers), split(phantomc), None if zeek == "-" else split(zeek)))
    keys = [(i, ip) for i, row in enumerate(rows) for ip in sorted(row[1])]
    model = IsolationForest(random_state=0).fit([rows[i][1][ip] for i, ip in keys])
    verdict = dict(zip(keys, model.predict([rows[i][1][ip] for i, ip in keys])))

    head = f"{'capture':<28} {'srcs':>5} {'att':>4} | {'phantomc P    R   FP':>20} | {'IsolationForest P R FP':>22} | {'Zeek P    R   FP':>16}"
    print(head)
    print("-" * len(head))
    totals = {"phantomc": [0, 0, 0], "iforest": [0, 0, 0], "zeek": [0, 0, 0]}
    for i, (name, feats, attackers, phantomc, zeek) in enumerate(rows):
        sources = set(feats) | attackers
        iforest = {ip for ip in feats if verdict[(i, ip)] == -1}
        cells = {}
        for who, flagged in (("phantomc", phantomc), ("iforest", iforest), ("zeek", zeek)):
            if flagged is None:
                cells[who] = f"{'-':>5} {'-':>5} {'-':>4}"
                continue
            s = score(set(flagged), attackers, sources)
            totals[who] = [t + v for t, v in zip(totals[who], s)]
            cells[who] = fmt(*s)
        print(f"{name:<28} {len(sources):>5} {len(attackers):>4} | {cells['phantomc']:>20} | "
              f"{cells['iforest']:>22} | {cells['zeek']:>16}")
    n_sources = sum(len(set(r[1]) | r[2]) for r in rows)
    n_attackers = sum(len(r[2]) for r in rows)
    print("-" * len(head))
    print(f"{'total':<28} {n_sources:>5} {n_attackers:>4} | {fmt(*totals['phantomc']):>20} | "
          f"{fmt(*totals['iforest']):>22} | {fmt(*totals['zeek']):>16}")
    print("P precision, R recall, FP benign sources proposed for blocking; Zeek only where a btest baseline exists")


if __name__ == "__main__":
    main(sys.argv[1])
