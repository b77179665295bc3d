#!/usr/bin/env python3
"""Where a traced step's time went, op by op: `bakallm bench --profile DIR`
writes Chrome traces (DIR/train_step.json, DIR/train_step_bfloat16.json, one
per decoded context); this reads one, or several and gives their mean, and
prints each op's self time (its span less the ops traced inside it), the
share of the step in matrix products (oneDNN's, traced as
bakallm::onednn_product, and libtorch's own) and between them, and the time
no op covers (our C++ between ops: "untraced").

    scripts/trace_ops.py DIR/train_step_bfloat16.json [MORE.json ...] [--top 25] [--json]

Several traces of the same step (from several bench runs) give each figure
as their mean: one traced step varies by several percent op by op.
"""
import argparse
import collections
import json
import re
import sys

# The ops whose self time is a matrix product.
PRODUCTS = re.compile(r"^(bakallm::onednn_product|bakallm::matmul_nt_q8|aten::(mm|bmm|addmm|baddbmm|addmv|mv|dot))$")


def events(path):
    with open(path) as f:
        data = json.load(f)
    if isinstance(data, dict):
        data = data.get("traceEvents", [])
    for e in data:
        if e.get("ph") == "X" and "dur" in e:
            yield e["name"], float(e["ts"]), float(e["dur"]), e.get("tid", 0)


def self_times(path):
    """{name: [calls, self µs]}, the step's wall µs and the µs no op covers."""
    by_thread = collections.defaultdict(list)
    for name, ts, dur, tid in events(path):
        by_thread[tid].append((ts, -dur, name))  # a parent before the children that start with it
    ops = collections.defaultdict(lambda: [0, 0.0])
    first, last, outermost = float("inf"), 0.0, []
    for spans in by_thread.values():
        spans.sort()
        stack = []  # [end, name, self µs]
        def close(until):
            while stack and stack[-1][0] <= until:
                end, name, own = stack.pop()
                ops[name][1] += own
        for ts, neg, name in spans:
            dur = -neg
            close(ts)
            if stack:
                stack[-1][2] -= dur
            else:
                outermost.append((ts, ts + dur))
            ops[name][0] += 1
            stack.append([ts + dur, name, dur])
            first, last = min(first, ts), max(last, ts + dur)
        close(float("inf"))
    covered, reach = 0.0, first  # the union of the outermost spans, on any thread
    for start, end in sorted(outermost):
        covered += max(0.0, end - max(start, reach))
        reach = max(reach, end)
    wall = max(last - first, 0.0)
    return ops, wall, max(wall - covered, 0.0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("traces", nargs="+", metavar="trace")
    parser.add_argument("--top", type=int, default=25, help="ops listed, by self time")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    a = parser.parse_args()
    ops = collections.defaultdict(lambda: [0, 0.0])
    wall = untraced = 0.0
    for path in a.traces:
        try:
            one, w, u = self_times(path)
        except (OSError, ValueError) as e:
            sys.exit(f"{path}: not a Chrome trace ({e})")
        if w <= 0:
            sys.exit(f"{path}: no complete events")
        for name, (n, t) in one.items():
            ops[name][0] += n / len(a.traces)
            ops[name][1] += t / len(a.traces)
        wall += w / len(a.traces)
        untraced += u / len(a.traces)
    products = sum(t for name, (_, t) in ops.items() if PRODUCTS.match(name))
    summary = {"step_s": wall / 1e6, "products_s": products / 1e6, "rest_s": (wall - products) / 1e6,
               "products_share": products / wall, "untraced_s": untraced / 1e6}
    ranked = sorted(ops.items(), key=lambda kv: -kv[1][1])
    if a.json:
        summary["ops"] = {name: {"calls": round(n, 3), "self_s": t / 1e6} for name, (n, t) in ranked}
        print(json.dumps(summary, indent=1))
        return
    print(f"step {wall / 1e3:.1f} ms: products {products / 1e3:.1f} ms ({100 * products / wall:.1f}%), "
          f"between them {(wall - products) / 1e3:.1f} ms, untraced {untraced / 1e3:.1f} ms")
    print(f"{'self ms':>9} {'share':>6} {'calls':>6}  op")
    for name, (n, t) in ranked[:a.top]:
        print(f"{t / 1e3:9.1f} {100 * t / wall:5.1f}% {n:6.0f}  {name}{'  (product)' if PRODUCTS.match(name) else ''}")


if __name__ == "__main__":
    main()
