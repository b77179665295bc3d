#!/usr/bin/env python3
"""Data-parallel measurement for BENCHMARKS.md: one process with every core
against N ranks sharing them (bakallm launch), same global batch, then an
estimate of N machines from the bytes summed per step and a link's bandwidth.

usage: scripts/dp_bench.py --data DIR [--preset tiny] [--batch 4] [--steps 12]
                           [--dtype float32] [--ranks 2] [--bakallm build/src/bakallm]
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile


def run(cmd):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0:
        sys.exit("failed: " + " ".join(cmd) + "\n" + p.stdout[-3000:])
    return p.stdout


def steps_of(run_dir, skip):
    recs = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl")) if '"loss"' in l]
    timed = recs[skip:]
    seconds = recs[-1]["seconds"] - recs[skip - 1]["seconds"]
    tokens = recs[-1]["tokens"] - recs[skip - 1]["tokens"]
    wait = sum(r.get("comm_wait_s", 0.0) for r in timed) / len(timed)
    return {"tok_per_s": tokens / seconds, "step_s": seconds / len(timed), "comm_wait_s": wait,
            "losses": [r["loss"] for r in recs]}


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--data", required=True)
    a.add_argument("--preset", default="tiny")
    a.add_argument("--batch", type=int, default=4, help="global rows")
    a.add_argument("--steps", type=int, default=12)
    a.add_argument("--skip", type=int, default=3, help="first steps left out of the timing")
    a.add_argument("--dtype", default="float32")
    a.add_argument("--ranks", type=int, default=2)
    a.add_argument("--bakallm", default="build/src/bakallm")
    o = a.parse_args()
    cores = os.cpu_count()
    with tempfile.TemporaryDirectory() as tmp:
        common = ["train", "--preset", o.preset, "--data", o.data, "--steps", str(o.steps), "--eval-every", "0",
                  "--checkpoint-every", "0", "--sample-tokens", "0", "--dtype", o.dtype, "--seed", "1",
                  "--packing", "stream"]  # no padding: every input slot is a token
        run([o.bakallm, "--threads", str(cores)] + common + ["--out", tmp + "/one", "--batch", str(o.batch)])
        one = steps_of(tmp + "/one", o.skip)
        out = run([o.bakallm, "launch", "--nproc", str(o.ranks), "--master-port", "0", "--"] + common +
                  ["--out", tmp + "/dp", "--batch", str(o.batch // o.ranks)])
        dp = steps_of(tmp + "/dp", o.skip)
    grad_mb = float(re.search(r"gradients ([0-9.]+) MB", out).group(1))
    alone_ms = float(re.search(r"([0-9]+) ms to sum alone", out).group(1))
    same = max(abs(x - y) / abs(x) for x, y in zip(one["losses"], dp["losses"]))
    result = {
        "preset": o.preset, "dtype": o.dtype, "global_batch": o.batch, "cores": cores, "ranks": o.ranks,
        "one_process_tok_per_s": one["tok_per_s"], "ranks_tok_per_s": dp["tok_per_s"],
        "ratio": dp["tok_per_s"] / one["tok_per_s"], "step_s": dp["step_s"],
        "comm_alone_s": alone_ms / 1000, "comm_wait_s": dp["comm_wait_s"],
        "comm_share_of_step": dp["comm_wait_s"] / dp["step_s"],
        "hidden_share": max(0.0, 1 - dp["comm_wait_s"] / max(alone_ms / 1000, 1e-9)),
        "gradient_bytes": grad_mb * 1e6, "max_loss_rel_diff": same,
        "one_process_step_s": one["step_s"],
    }
    # N machines, each with the per-machine batch of the one-process run: a ring
    # allreduce moves 2(N-1)/N of the gradient bytes over each link, plus
    # 2(N-1) hops of latency. The backward (about 2/3 of a step) can hide it.
    est = []
    step = one["step_s"]
    for n in (8, 64):
        for gbit in (10, 100):
            comm = 2 * (n - 1) / n * result["gradient_bytes"] / (gbit / 8 * 1e9) + 2 * (n - 1) * 50e-6
            no_overlap = step / (step + comm)
            overlap = step / (step + max(0.0, comm - 2 / 3 * step))
            est.append({"machines": n, "link_gbit": gbit, "comm_s": comm, "efficiency_no_overlap": no_overlap,
                        "efficiency_overlap": overlap})
    result["estimate"] = est
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
