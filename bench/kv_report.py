#!/usr/bin/env python3
"""Turns the raw results bench/kv.sh collected into a markdown report.

  kv_report.py WORKDIR       prints the report to stdout

WORKDIR holds, as for bench/report.py (whose parsing and formatting this uses):
  meta.tsv       key<TAB>value (machine, versions, settings)
  commands.tsv   server-key<TAB>label<TAB>exact command
  wrk/KEY-cC-rR.txt   wrk --latency output, case KEY, C connections, repeat R
  warm/KEY-cC.txt     the warm-up's wrk output (counted in the counter check)
  counts.tsv     KEY<TAB>before<TAB>N1<TAB>N2<TAB>grows, KEY<TAB>after<TAB>N
Standard library only.
"""

import os
import re
import sys
from collections import defaultdict

from report import fmt_ms, fmt_ratio, fmt_rps, median, parse_wrk, read_tsv

CASES = ["wasmlet-memory", "wasmtime-kv", "wasmlet-file", "wasmlet-redis", "wasmlet-nostore", "wasmtime-nostore"]
LABELS = {
    "wasmlet-memory": "wasmlet, `memory` store",
    "wasmtime-kv": "wasmtime serve -Skeyvalue (pooling as wasmlet)",
    "wasmlet-file": "wasmlet, `file` store (embedded default)",
    "wasmlet-redis": "wasmlet, `redis` store (loopback)",
    "wasmlet-nostore": "baseline: wasmlet, GET / (no store opened)",
    "wasmtime-nostore": "baseline: wasmtime serve -Skeyvalue, GET / (no store opened)",
}
COUNTERS = CASES[:4]


def main():
    work = sys.argv[1]
    meta = dict(read_tsv(os.path.join(work, "meta.tsv"), 2))
    commands = read_tsv(os.path.join(work, "commands.tsv"), 3)

    results = defaultdict(lambda: defaultdict(list))  # conns -> case -> runs
    completed = defaultdict(int)  # case -> requests wrk completed, warm-ups included
    in_flight = defaultdict(int)  # case -> connections summed over its wrk runs
    for sub, pattern in (("wrk", r"(.+)-c(\d+)-r(\d+)\.txt"), ("warm", r"(.+)-c(\d+)\.txt")):
        folder = os.path.join(work, sub)
        for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            m = re.fullmatch(pattern, name)
            if not m:
                continue
            with open(os.path.join(folder, name)) as f:
                text = f.read()
            if sub == "wrk":
                run = parse_wrk(text)
                results[int(m.group(2))][m.group(1)].append(run)
                completed[m.group(1)] += run["requests"]
            else:
                done = re.search(r"^\s*(\d+) requests in", text, re.M)
                completed[m.group(1)] += int(done.group(1)) if done else 0
            in_flight[m.group(1)] += int(m.group(2))
    conns = sorted(results)

    p = print
    p(f"# wasmlet key-value benchmark — {meta.get('date', '')}")
    p()
    if meta.get("note"):
        p(f"> {meta['note']}")
        p()
    p("The Rust visit counter (guest/counter, `hello-counter`): `GET /count` opens the store `\"\"` "
      "(wasmlet: the route's `default` store) and adds one to `hits` with `atomics.increment`.")
    p()
    p("## Machine and versions")
    p()
    for key, title in [
        ("cpu", "CPU"), ("nproc", "nproc"), ("kernel", "Kernel"), ("mem", "Memory"),
        ("loadavg", "Load average at start"), ("loadavg_end", "Load average after the load runs"),
        ("wasmlet", "wasmlet"), ("profile", "wasmlet's cargo profile"), ("wasmtime", "wasmtime CLI"),
        ("redis", "Redis"), ("rustc", "rustc"), ("wrk", "Load generator"),
    ]:
        if key in meta:
            p(f"- **{title}**: {meta[key]}")
    p(
        f"- **Settings**: {meta.get('duration', '?')} s per run after a {meta.get('warmup', '?')} s warm-up "
        f"per case and connection count; {meta.get('repeats', '?')} repeat(s), cases interleaved "
        f"(a b c d a b c d …); wrk threads = min(connections, {meta.get('threads', '?')}); "
        "all on loopback, all servers, Redis and wrk on the same cores."
    )
    p()

    p("## Throughput and latency (medians)")
    p()
    p("| conns | case | req/s | req/s min–max | p50 ms | p99 ms | non-2xx | socket errors |")
    p("|---:|---|---:|---:|---:|---:|---:|---:|")
    med = defaultdict(dict)
    problems = []
    for c in conns:
        for key in CASES:
            runs = results[c].get(key, [])
            if not runs:
                continue
            rps = [r["rps"] for r in runs]
            m = {k: median([r[k] for r in runs]) for k in ("rps", "p50", "p99")}
            med[c][key] = m
            non2xx = sum(r["non2xx"] for r in runs)
            sockerr = sum(r["sockerr"] for r in runs)
            if non2xx or sockerr:
                details = "; ".join(r["sockerr_detail"] for r in runs if r["sockerr_detail"])
                problems.append(f"{LABELS[key]} at {c} connections: {non2xx} non-2xx, {sockerr} socket errors {details}".rstrip())
            p(
                f"| {c} | {LABELS[key]} | {fmt_rps(m['rps'])} | {fmt_rps(min(rps))}–{fmt_rps(max(rps))} "
                f"| {fmt_ms(m['p50'])} | {fmt_ms(m['p99'])} | {non2xx} | {sockerr} |"
            )
    p()

    def rps(c, key):
        return med[c].get(key, {}).get("rps", float("nan"))

    def p99(c, key):
        return med[c].get(key, {}).get("p99", float("nan"))

    p("## Ratios (requests/s, medians)")
    p()
    p("| conns | memory ÷ wasmtime serve | file ÷ memory | redis ÷ memory | redis p99 − memory p99 "
      "| wasmlet: memory ÷ no store | wasmtime serve: /count ÷ no store |")
    p("|---:|---:|---:|---:|---:|---:|---:|")
    for c in conns:
        p(
            f"| {c} | {fmt_ratio(rps(c, 'wasmlet-memory'), rps(c, 'wasmtime-kv'))} "
            f"| {fmt_ratio(rps(c, 'wasmlet-file'), rps(c, 'wasmlet-memory'))} "
            f"| {fmt_ratio(rps(c, 'wasmlet-redis'), rps(c, 'wasmlet-memory'))} "
            f"| {p99(c, 'wasmlet-redis') - p99(c, 'wasmlet-memory'):+.2f} ms "
            f"| {fmt_ratio(rps(c, 'wasmlet-memory'), rps(c, 'wasmlet-nostore'))} "
            f"| {fmt_ratio(rps(c, 'wasmtime-kv'), rps(c, 'wasmtime-nostore'))} |"
        )
    p()

    counts = read_tsv(os.path.join(work, "counts.tsv"), 5)
    before = {row[0]: row for row in counts if row[1] == "before"}
    after = {row[0]: int(row[2]) for row in counts if row[1] == "after"}
    if before:
        p("## Does it count?")
        p()
        p("Two `GET /count` before the load (N must grow by one), one after it. Increments counted: "
          "the last N less the second N and the last request itself; wrk's completed requests "
          "include the warm-ups; up to one request per connection and run may be counted by the "
          "store and cut off before wrk saw its answer.")
        p()
        p("| server | N before (two GETs) | grows | N after the load | increments counted | requests wrk completed | check |")
        p("|---|---|:---:|---:|---:|---:|---|")
        for key in COUNTERS:
            if key not in before:
                continue
            _, _, n1, n2, grows = before[key]
            n_after = after.get(key)
            counted = n_after - int(n2) - 1 if n_after is not None else None
            done = completed[key]
            if key == "wasmtime-kv":
                ok = "same text, N stays 1" if grows == "no" and n_after == int(n2) else f"N went {n2} → {n_after}"
            elif counted is not None and done <= counted <= done + in_flight[key]:
                ok = "ok"
            else:
                ok = "**lost or doubled increments**"
                problems.append(f"{LABELS[key]}: {counted} increments counted, {done} requests completed")
            p(f"| {LABELS[key]} | {n1}, {n2} | {grows} | {n_after if n_after is not None else '—'} "
              f"| {counted if key != 'wasmtime-kv' and counted is not None else '—'} | {done:,} | {ok} |")
        p()
        if "wasmtime-kv" in before:
            p("`wasmtime serve -Skeyvalue` answers the same text with N = 1 every time: it builds a new "
              "in-memory store, from `-Skeyvalue-in-memory-data`, for every request "
              "(`WasiKeyValueCtxBuilder::new()…build()` in wasmtime-cli 48's `serve.rs`, per store, and "
              "a `wasi:http` 0.2 instance serves one request). So its store is a fresh `HashMap` with "
              "no lock and nothing shared, while wasmlet's `memory` store is one map shared by every "
              "request under a lock: the pair compares the same guest and calls, not the same semantics.")
            p()

    if conns:
        c = 64 if 64 in conns else min(conns, key=lambda x: abs(x - 64))
        mem, wt, file_, redis = (rps(c, k) for k in ("wasmlet-memory", "wasmtime-kv", "wasmlet-file", "wasmlet-redis"))
        gap = p99(c, "wasmlet-redis") - p99(c, "wasmlet-memory")
        rows = [
            ("`memory` requests/s ≥ 2× wasmtime serve -Skeyvalue", f"{mem / wt:.2f}×" if wt else "—", wt and mem / wt >= 2),
            ("`file` requests/s ≥ 50% of `memory`", f"{100 * file_ / mem:.0f}%" if mem else "—", mem and file_ / mem >= 0.5),
            ("`redis` p99 within 2 ms of `memory`'s",
             f"{fmt_ms(p99(c, 'wasmlet-redis'))} vs {fmt_ms(p99(c, 'wasmlet-memory'))} ms ({gap:+.2f})", gap <= 2),
        ]
        p(f"## Targets (issue 28, at {c} connections)")
        p()
        p("| target | measured | met |")
        p("|---|---:|:---:|")
        for name, value, ok in rows:
            p(f"| {name} | {value} | {'yes' if ok else '**no**'} |")
        p()

    if problems:
        p("## Errors")
        p()
        for line in problems:
            p(f"- {line}")
        p()

    p("## Commands")
    p()
    p("```sh")
    p(f"# benchmark: {meta.get('invocation', 'bench/kv.sh')}")
    for key, lab, cmd in commands:
        p(f"# {lab}")
        p(cmd)
    if "wrk_cmd" in meta:
        p("# load (per case, connection count and repeat; URL .../count, the baselines .../)")
        p(meta["wrk_cmd"])
    p("```")
    p()
    p("The wasmlet manifests: `[[route]] path = \"/...\"`, `component = \"hello_counter.wasm\"`, "
      "`key_value_stores = [\"default\"]`, with `[key_value_store.default] type = \"memory\"`, none "
      "(the `file` default, under `--data-dir`), or `type = \"redis\"`, "
      "`url = \"redis://127.0.0.1:PORT/0\"`.")


if __name__ == "__main__":
    main()
