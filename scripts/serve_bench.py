#!/usr/bin/env python3
"""Measures a running `bakallm serve` (docs/SERVER.md, BENCHMARKS.md).

    scripts/serve_bench.py http://127.0.0.1:8080 --streams 1 4 16 --tokens 64
    scripts/serve_bench.py http://127.0.0.1:8080 --session-tokens 100000

Streams: N concurrent streamed completions of --tokens tokens each (greedy,
distinct prompts); prints aggregate generated tokens/s and the gap between a
stream's consecutive tokens, p50 and p99. Session: reads --session-tokens
tokens into a session (in pieces), then times one more token on the session
against one request that re-reads the whole text. Python's standard library
only: it is a client, not part of bakallm.
"""
import argparse
import http.client
import json
import random
import threading
import time
import urllib.parse


def post(url, path, body, stream=False):
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=3600)
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    res = conn.getresponse()
    if res.status != 200:
        raise RuntimeError(f"{path}: {res.status} {res.read()[:300]}")
    if not stream:
        return json.loads(res.read())
    return res


def stream_times(url, prompt, tokens, out):
    t0 = time.perf_counter()
    res = post(url, "/v1/completions", {"prompt": prompt, "max_tokens": tokens, "temperature": 0, "stream": True}, True)
    times = []
    for raw in res:
        line = raw.decode().strip()
        if line.startswith("data: ") and line != "data: [DONE]":
            chunk = json.loads(line[6:])
            if chunk["choices"][0]["finish_reason"] is None:
                times.append(time.perf_counter())
    out.append((t0, times))


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] if xs else float("nan")


def bench_streams(url, n, tokens):
    out, threads = [], []
    rng = random.Random(n)
    for k in range(n):
        prompt = [1] + [300 + rng.randrange(5000) for _ in range(16)]
        threads.append(threading.Thread(target=stream_times, args=(url, prompt, tokens, out)))
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    gaps = [b - a for _, ts in out for a, b in zip(ts, ts[1:])]
    total = sum(len(ts) for _, ts in out)
    return {"streams": n, "tokens": total, "seconds": wall, "tokens_per_s": total / wall,
            "gap_ms_p50": 1000 * percentile(gaps, 50), "gap_ms_p99": 1000 * percentile(gaps, 99)}


def bench_session(url, total, piece):
    rng = random.Random(7)
    ids = [1] + [300 + rng.randrange(5000) for _ in range(total - 1)]
    sid = f"bench{rng.randrange(1 << 30)}"
    t0 = time.perf_counter()
    for i in range(0, total, piece):
        post(url, "/v1/completions", {"prompt": ids[i:i + piece], "max_tokens": 0, "session": sid})
    fill = time.perf_counter() - t0
    t0 = time.perf_counter()
    post(url, "/v1/completions", {"prompt": [400], "max_tokens": 1, "temperature": 0, "session": sid})
    cont = time.perf_counter() - t0
    t0 = time.perf_counter()
    post(url, "/v1/completions", {"prompt": ids + [400], "max_tokens": 1, "temperature": 0})
    reread = time.perf_counter() - t0
    return {"session_tokens": total, "fill_seconds": fill, "continue_seconds": cont, "reread_seconds": reread}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--streams", type=int, nargs="*", default=[])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--session-tokens", type=int, default=0)
    ap.add_argument("--piece", type=int, default=8192)
    a = ap.parse_args()
    for n in a.streams:
        print(json.dumps(bench_streams(a.url, n, a.tokens)), flush=True)
    if a.session_tokens:
        print(json.dumps(bench_session(a.url, a.session_tokens, a.piece)), flush=True)


if __name__ == "__main__":
    main()
