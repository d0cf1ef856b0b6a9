#!/usr/bin/env python3
# Instructions per operation in two phases counted by `scripts/vm-run
# --count-insns` (scripts/lib/qemu-tbcount.c), per module and per symbol,
# and calls per operation (executions of a symbol's first block).
#   insn-report.py KALLSYMS PHASE_A PHASE_B OPS [TOP]
# KALLSYMS is the guest's /proc/kallsyms (copied out by the guest script);
# PHASE_A/B are two PREFIX.N files; OPS divides every count (e.g. the I/Os
# each phase ran). User space is one line: its addresses are not symbolised.
import bisect
import collections
import sys

if len(sys.argv) not in (5, 6):
    sys.exit("usage: insn-report.py KALLSYMS PHASE_A PHASE_B OPS [TOP]")
syms = []
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) >= 3 and f[1] in "tTwW":
        syms.append((int(f[0], 16), f[2], f[3].strip("[]") if len(f) > 3 else "vmlinux"))
syms.sort()
starts = [s[0] for s in syms]
entry = {s[0]: s for s in syms}


def load(path):
    insns, calls, mods, total = collections.Counter(), collections.Counter(), collections.Counter(), 0
    for line in open(path):
        va, n, execs = line.split()
        va, n, execs = int(va, 16), int(n), int(execs)
        total += n * execs
        if va < 0xFFFF000000000000:
            mods["user"] += n * execs
            continue
        i = bisect.bisect_right(starts, va) - 1
        _, name, mod = syms[i] if i >= 0 else (0, "?", "?")
        insns[(mod, name)] += n * execs
        mods[mod] += n * execs
        if va in entry:
            calls[(mod, name)] += execs
    return insns, calls, mods, total


ops = float(sys.argv[4])
top = int(sys.argv[5]) if len(sys.argv) > 5 else 40
ai, ac, am, at = load(sys.argv[2])
bi, bc, bm, bt = load(sys.argv[3])
print(f"instructions per op: A {at / ops:.0f}  B {bt / ops:.0f}  B/A {bt / max(at, 1):.3f}")
for m in sorted(set(am) | set(bm), key=lambda m: -(am[m] + bm[m]))[:10]:
    print(f"  {m:20s} A {am[m] / ops:9.0f}  B {bm[m] / ops:9.0f}  B-A {(bm[m] - am[m]) / ops:+8.0f}")
print("symbols by B-A (instructions per op):")
for k in sorted(set(ai) | set(bi), key=lambda k: -abs(bi[k] - ai[k]))[:top]:
    print(f"  {(bi[k] - ai[k]) / ops:+8.0f}  A {ai[k] / ops:7.0f}  B {bi[k] / ops:7.0f}  {k[0]}:{k[1]}")
print("calls per op by B-A:")
for k in sorted(set(ac) | set(bc), key=lambda k: -abs(bc[k] - ac[k]))[:top]:
    if abs(bc[k] - ac[k]) / ops >= 0.2:
        print(f"  {(bc[k] - ac[k]) / ops:+7.2f}  A {ac[k] / ops:6.2f}  B {bc[k] / ops:6.2f}  {k[0]}:{k[1]}")
