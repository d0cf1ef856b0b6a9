#!/usr/bin/env python3
"""Turn the fio JSON files of scripts/bench into report.md and plot.svg."""
import glob
import json
import os
import statistics
import sys

out = sys.argv[1]
results = {}  # workload -> target -> [value]
by_round = {}  # workload -> target -> round -> value (for paired ratios)
units = {}
lower_better = set()  # workloads whose value is a time
for path in sorted(glob.glob(os.path.join(out, "*.val"))):
    name, target, _round, _ = os.path.basename(path).rsplit(".", 3)
    value, unit, better = open(path).read().split()
    units[name] = unit
    if better == "low":
        lower_better.add(name)
    results.setdefault(name, {}).setdefault(target, []).append(float(value))
    by_round.setdefault(name, {}).setdefault(target, {})[_round] = float(value)
for path in sorted(glob.glob(os.path.join(out, "*.json"))):
    name, target, _round, _ = os.path.basename(path).rsplit(".", 3)
    with open(path) as f:
        job = json.load(f)["jobs"][0]
    side = "read" if "read" in name else "write"
    if "1m" in name:
        value, unit = job[side]["bw"] / 1024.0, "MiB/s"
    else:
        value, unit = job[side]["iops"], "IOPS"
    units[name] = unit
    results.setdefault(name, {}).setdefault(target, []).append(value)
    by_round.setdefault(name, {}).setdefault(target, {})[_round] = value


def med(v):
    return statistics.median(v) if v else float("nan")


def paired(w, a, b):
    # Per-round ratios a/b: the two targets of a round ran back to back, so
    # load on the host (other guests) weighs on both alike.
    ra, rb = by_round.get(w, {}).get(a, {}), by_round.get(w, {}).get(b, {})
    return [ra[k] / rb[k] for k in ra if k in rb and rb[k] and ra[k]]


def spread(v):
    # Half the min-max range relative to the median, in percent.
    if len(v) < 2 or med(v) == 0:
        return 0.0
    return 50.0 * (max(v) - min(v)) / med(v)


order = ["randread-4k-qd1", "randread-4k-qd32", "randwrite-4k-qd1",
         "randwrite-4k-qd32", "read-1m-qd4", "write-1m-qd4",
         "thin-randwrite-4k-qd1", "thin-randwrite-4k-qd32", "thin-provision-4k-zeroing",
         "thin-provision-4k-nozeroing", "thin-snapshot-break-4k", "thin-seqread-1m-qd4",
         "thin-discard-all", "thin-activate-1m-mappings"]
order += [f"snap-origin-{k}-4k-{n}" for k in ("firstwrite", "rewrite") for n in (0, 1, 2, 4, 8)]
order += ["snap-read-4k", "snap-merge"]
rows = [w for w in order if w in results] + sorted(set(results) - set(order))
kernel = open(os.path.join(out, "kernel")).read().strip() if os.path.exists(
    os.path.join(out, "kernel")) else "?"
icount_path = os.path.join(out, "icount")
icount = open(icount_path).read().strip() if os.path.exists(icount_path) else ""
clock = (f"guest clock on instructions executed (QEMU -icount shift={icount},sleep=off: "
         "timings count the guest's work and timed waits, not the host's load)"
         if icount else "guest clock on host time")
thin_impl_path = os.path.join(out, "thin-impl")
thin_impl = open(thin_impl_path).read().strip() if os.path.exists(thin_impl_path) else ""
# Each row compares the C target ("c-*": snapshot-origin, thin) with dm-rs's
# ("rs-*") and, where measured, dm-linear.
lines = [
    "| workload | unit | dm-linear | C target | dm-rs target | dm-rs/C | rounds' dm-rs/C | dm-rs/linear |",
    "|---|---|---|---|---|---|---|---|",
]
ratios = []
for w in rows:
    r = results[w]
    c = next((t for t in r if t.startswith("c-")), "c-")
    rs = next((t for t in r if t.startswith("rs-")), "rs-")
    cells = []
    for t in ("linear", c, rs):
        v = r.get(t, [])
        cells.append(f"{med(v):.0f} ±{spread(v):.1f}% (n={len(v)})" if v else "-")
    # dm-rs/C: the median of the rounds' paired ratios (ratio of medians
    # where rounds do not pair up); its min-max beside it.
    pr = paired(w, rs, c)
    rc = med(pr) if pr else (med(r.get(rs, [])) / med(r[c]) if r.get(c) else float("nan"))
    rl = med(r.get(rs, [])) / med(r["linear"]) if r.get("linear") else float("nan")
    if w in lower_better:  # a time: the ratio still reads "> 1 is dm-rs faster"
        rc, rl = 1 / rc if rc else float("nan"), 1 / rl if rl else float("nan")
        pr = [1 / x for x in pr]
    rng = f"{min(pr):.2f}-{max(pr):.2f}" if pr else "-"
    ratios.append((w, rc, rl))
    lines.append(f"| {w} | {units[w]} | " + " | ".join(cells) + f" | {rc:.3f} | {rng} | {rl:.3f} |")
table = "\n".join(lines)
with open(os.path.join(out, "report.md"), "w") as f:
    f.write(f"# dm-rs bio-path benchmark\n\nGuest kernel {kernel}, {clock}, fio direct I/O on brd, "
            "median of rounds (± half range). Rows without a prefix compare snapshot-origin "
            "without snapshots, thin-* rows the thin target, snap-* rows snapshot-origin with "
            "N persistent snapshots, snapshot reads and snap-merge merge throughput. Ratios read > 1 when dm-rs is faster "
            "(for times, C/dm-rs). Goal: dm-rs/C >= 1.00 on every row.\n\n")
    if thin_impl == "c":
        f.write("Thin rows are a C-vs-C calibration: both columns are C dm-thin.\n\n")
    f.write(table + "\n")
print(table)

# A bar chart of the two ratios per workload, as plain SVG.
W, H, left, top, bar = 760, 60 + 40 * len(ratios), 170, 40, 14
scale = lambda x: left + (W - left - 40) * min(max(x, 0.0), 1.2) / 1.2
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       '<text x="10" y="20" font-size="14">dm-rs throughput ratios (1.0 = equal)</text>']
for i, (w, rc, rl) in enumerate(ratios):
    y = top + 40 * i
    svg.append(f'<text x="10" y="{y + 16}">{w}</text>')
    for j, (val, colour, label) in enumerate([(rc, "#3366cc", "dm-rs/C"), (rl, "#dc9900", "dm-rs/linear")]):
        yy = y + j * (bar + 2)
        if val == val:  # not NaN
            svg.append(f'<rect x="{left}" y="{yy}" width="{scale(val) - left:.1f}" height="{bar}" fill="{colour}"/>')
            svg.append(f'<text x="{scale(val) + 4:.1f}" y="{yy + 11}">{label} {val:.3f}</text>')
for ref in (0.98, 1.0):
    x = scale(ref)
    svg.append(f'<line x1="{x:.1f}" y1="{top - 5}" x2="{x:.1f}" y2="{H - 10}" stroke="#888" stroke-dasharray="4,3"/>')
    svg.append(f'<text x="{x - 10:.1f}" y="{H - 2}" fill="#555">{ref}</text>')
svg.append("</svg>")
with open(os.path.join(out, "plot.svg"), "w") as f:
    f.write("\n".join(svg) + "\n")

# The same report as reStructuredText, for Documentation/performance.rst.
import datetime
rst = [
    ".. SPDX-License-Identifier: GPL-2.0",
    "",
    "===========",
    "Performance",
    "===========",
    "",
    "What dm-rs costs on the bio path, measured by ``scripts/bench``: fio with",
    "direct I/O against one RAM disk (brd) through dm-linear (the limit), upstream's",
    "C ``snapshot-origin`` and dm-rs's (registered as ``rs-snap-origin``), all in the",
    "same guest boot, alternating targets every round; ``thin-*`` rows compare C",
    "``thin-pool``/``thin`` with dm-rs's (``rs-thin-pool``, ``scripts/bench --thin rs``),",
    "``snap-*`` rows an origin with N persistent snapshots (4 KiB chunks),",
    "snapshot reads and ``snap-merge`` (a snapshot whose every chunk was written merged",
    "back into its origin by ``snapshot-merge``, MiB/s), C ``snapshot`` against dm-rs's",
    "(``scripts/bench --snapshot``).",
    "``thin-discard-all`` discards a whole provisioned thin; ``thin-activate-1m-mappings``",
    "times pool and thin activation over ``thin_restore``-made metadata with 10^6",
    "mappings up to the first read (a time: its ratios are C/dm-rs). Values are medians",
    "over the rounds, ± half the min-max range; dm-rs/C is the median of each round's",
    "ratio (the two targets of a round run back to back), their range beside it.",
    "The guest runs under QEMU TCG, so",
    "absolute numbers mean little; the ratios are the result. Goal: dm-rs/C >= 1.00",
    "on every row (sequential thin reads also >= 0.95 of dm-linear).",
    "",
    f"Latest full run: {datetime.date.today().isoformat()}, guest kernel {kernel}, {clock}.",
    "",
    ".. csv-table::",
    '   :header: "workload", "unit", "dm-linear", "C target", "dm-rs target", "dm-rs/C", "rounds\' dm-rs/C", "dm-rs/linear"',
    "",
]
for line in lines[2:]:
    cells = [c.strip() for c in line.strip("|").split("|")]
    rst.append("   " + ", ".join(f'"{c}"' for c in cells))
rst += ["", ".. image:: performance.svg", "   :alt: dm-rs/C and dm-rs/linear ratios per workload", ""]
with open(os.path.join(out, "report.rst"), "w") as f:
    f.write("\n".join(rst))
