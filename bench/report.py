#!/usr/bin/env python3
"""Turns the raw results bench/run.sh collected into a markdown report.

  report.py WORKDIR          prints the report to stdout

WORKDIR holds:
  meta.tsv       key<TAB>value (machine, versions, settings)
  commands.tsv   server-key<TAB>label<TAB>exact command
  wrk/KEY-cC-rR.txt   wrk --latency output, server KEY, C connections, repeat R
  cold.jsonl     {"label": ..., "ms": [...], "cmd": [...]} per cold-start case
  rss.tsv        server-key<TAB>idle KiB<TAB>peak KiB
Standard library only.
"""

import json
import shlex
import os
import re
import statistics
import sys
from collections import defaultdict

SERVERS = ["wasmlet", "wasmtime", "wasmtime-pool", "native", "wasmlet-reuse", "wasmtime-reuse",
           "wasmlet-p3", "wasmtime-p3"]

_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


def to_ms(text):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text.strip())
    if not m:
        raise ValueError(f"unrecognised wrk duration {text!r}")
    return float(m.group(1)) * _UNIT_MS[m.group(2)]


def parse_wrk(text):
    """requests/s, p50/p99 (ms), total requests, non-2xx/3xx and socket errors."""
    rps = re.search(r"^Requests/sec:\s*([0-9.]+)", text, re.M)
    if not rps:
        raise ValueError("no Requests/sec line in wrk output:\n" + text)
    out = {"rps": float(rps.group(1))}
    for pct in ("50", "99"):
        m = re.search(rf"^\s*{pct}%\s+(\S+)", text, re.M)
        out[f"p{pct}"] = to_ms(m.group(1)) if m else float("nan")
    m = re.search(r"^\s*(\d+) requests in", text, re.M)
    out["requests"] = int(m.group(1)) if m else 0
    m = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", text)
    out["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    out["sockerr"] = sum(map(int, m.groups())) if m else 0
    out["sockerr_detail"] = m.group(0) if m else ""
    return out


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def fmt_rps(x):
    return "—" if x != x else f"{x:,.0f}"


def fmt_ms(x):
    if x != x:
        return "—"
    return f"{x:.2f}" if x < 10 else f"{x:.1f}"


def fmt_ratio(a, b):
    return "—" if not b or a != a or b != b else f"{a / b:.2f}×"


def read_tsv(path, ncols):
    rows = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.rstrip("\n")
                if line:
                    rows.append(line.split("\t", ncols - 1))
    return rows


def main():
    work = sys.argv[1]
    meta = dict(read_tsv(os.path.join(work, "meta.tsv"), 2))
    commands = read_tsv(os.path.join(work, "commands.tsv"), 3)
    label = {key: lab for key, lab, _ in commands}
    for key in SERVERS:
        label.setdefault(key, key)

    # wrk runs: results[conns][server] -> list of parsed runs
    results = defaultdict(lambda: defaultdict(list))
    wrk_dir = os.path.join(work, "wrk")
    for name in sorted(os.listdir(wrk_dir)) if os.path.isdir(wrk_dir) else []:
        m = re.fullmatch(r"(.+)-c(\d+)-r(\d+)\.txt", name)
        if not m:
            continue
        with open(os.path.join(wrk_dir, name)) as f:
            results[int(m.group(2))][m.group(1)].append(parse_wrk(f.read()))
    conns = sorted(results)

    p = print
    p(f"# wasmlet benchmark — {meta.get('date', '')}")
    p()
    if meta.get("note"):
        p(f"> {meta['note']}")
        p()
    p("## Machine and versions")
    p()
    for key, title in [
        ("cpu", "CPU"), ("nproc", "nproc"), ("kernel", "Kernel"), ("mem", "Memory"),
        ("loadavg", "Load average at start"), ("loadavg_end", "Load average after the load runs"), ("wasmlet", "wasmlet"), ("wasmtime", "wasmtime CLI"),
        ("rustc", "rustc"), ("hyper", "hyper (native-hello)"), ("wrk", "Load generator"),
    ]:
        if key in meta:
            p(f"- **{title}**: {meta[key]}")
    p(
        f"- **Settings**: {meta.get('duration', '?')} s per run after a {meta.get('warmup', '?')} s warm-up "
        f"per server and connection count; {meta.get('repeats', '?')} repeat(s), servers interleaved "
        f"(a b c d a b c d …); wrk threads = min(connections, {meta.get('threads', '?')}); "
        f"cold start: median of {meta.get('cold_runs', '?')} rounds, each starting every case once "
        f"(interleaved, the order rotated each round); all on loopback, all servers on the same cores."
    )
    p()

    p("## Throughput and latency (medians)")
    p()
    p("| conns | server | req/s | req/s min–max | p50 ms | p99 ms | non-2xx | socket errors |")
    p("|---:|---|---:|---:|---:|---:|---:|---:|")
    med = defaultdict(dict)
    problems = []
    for c in conns:
        for key in SERVERS:
            runs = results[c].get(key, [])
            if not runs:
                continue
            rps = [r["rps"] for r in runs]
            m = {
                "rps": median(rps),
                "p50": median([r["p50"] for r in runs]),
                "p99": median([r["p99"] for r in runs]),
            }
            med[c][key] = m
            non2xx = sum(r["non2xx"] for r in runs)
            sockerr = sum(r["sockerr"] for r in runs)
            if non2xx or sockerr:
                details = "; ".join(r["sockerr_detail"] for r in runs if r["sockerr_detail"])
                problems.append(f"{label[key]} at {c} connections: {non2xx} non-2xx, {sockerr} socket errors {details}".rstrip())
            p(
                f"| {c} | {label[key]} | {fmt_rps(m['rps'])} | {fmt_rps(min(rps))}–{fmt_rps(max(rps))} "
                f"| {fmt_ms(m['p50'])} | {fmt_ms(m['p99'])} | {non2xx} | {sockerr} |"
            )
    p()

    def ratios(title, subject, others):
        """A table of `subject`'s median req/s over each of `others` (key, heading)."""
        p(title)
        p()
        p("| conns | " + " | ".join(heading for _, heading in others) + " |")
        p("|---:|" + "---:|" * len(others))
        for c in conns:
            w = med[c].get(subject, {}).get("rps", float("nan"))
            cells = [fmt_ratio(w, med[c].get(k, {}).get("rps")) for k, _ in others]
            p(f"| {c} | " + " | ".join(cells) + " |")
        p()

    ratios("## Ratios (wasmlet requests/s ÷ the other's, medians)", "wasmlet", [
        ("wasmtime", "wasmlet / wasmtime serve (default)"),
        ("wasmtime-pool", "wasmlet / wasmtime serve (pooling as wasmlet)"),
        ("native", "wasmlet / native hyper"),
    ])
    if any("wasmlet-reuse" in med[c] for c in conns):
        ratios("## Ratios with instance reuse (wasmlet with reuse, requests/s ÷ the other's, medians)", "wasmlet-reuse", [
            ("wasmtime-reuse", "÷ wasmtime serve (pooling, same reuse)"),
            ("native", "÷ native hyper"),
            ("wasmlet", "÷ wasmlet (fresh instances)"),
        ])
    if any("wasmlet-p3" in med[c] for c in conns):
        ratios("## Ratios for the wasi:http 0.3 hello (wasmlet, requests/s ÷ the other's, medians)", "wasmlet-p3", [
            ("wasmtime-p3", "÷ wasmtime serve -Sp3 (pooling, same reuse)"),
            ("native", "÷ native hyper"),
            ("wasmlet-reuse", "÷ wasmlet, 0.2 hello with reuse"),
        ])

    cold = []
    cold_path = os.path.join(work, "cold.jsonl")
    if os.path.exists(cold_path):
        with open(cold_path) as f:
            cold = [json.loads(line) for line in f if line.strip()]
    cold_med = {}
    if cold:
        p("## Cold start (process spawn → first 200 on GET /)")
        p()
        p("| server | compiled cache | median ms | min ms | max ms | runs |")
        p("|---|---|---:|---:|---:|---:|")
        for entry in cold:
            ms = entry["ms"]
            cold_med[entry["label"]] = median(ms)
            server, _, cache = entry["label"].partition(" | ")
            p(f"| {server} | {cache} | {fmt_ms(median(ms))} | {fmt_ms(min(ms))} | {fmt_ms(max(ms))} | {len(ms)} |")
        p()

    rss = {key: (int(idle), int(peak)) for key, idle, peak in read_tsv(os.path.join(work, "rss.tsv"), 3)}
    if rss:
        p(f"## Memory (RSS, MiB)")
        p()
        p(f"Idle: VmRSS after start-up and one GET /. Peak: VmHWM after the {max(conns) if conns else '?'}-connection runs.")
        p()
        p("| server | idle RSS | peak RSS under load |")
        p("|---|---:|---:|")
        for key in SERVERS:
            if key in rss:
                idle, peak = rss[key]
                p(f"| {label[key]} | {idle / 1024:.1f} | {peak / 1024:.1f} |")
        p()

    # Issue 6's targets, at 64 connections (or the nearest count measured).
    if conns:
        c = 64 if 64 in conns else min(conns, key=lambda x: abs(x - 64))
        m = med[c]
        w = m.get("wasmlet", {})
        def ratio(k):
            return w.get("rps", float("nan")) / m[k]["rps"] if k in m and m[k]["rps"] else float("nan")
        rows = [
            ("requests/s ≥ 3× wasmtime serve (default)", f"{ratio('wasmtime'):.2f}×", ratio("wasmtime") >= 3),
            ("requests/s ≥ 1.5× wasmtime serve (pooling as wasmlet)", f"{ratio('wasmtime-pool'):.2f}×", ratio("wasmtime-pool") >= 1.5),
            ("requests/s ≥ 40% of native hyper", f"{100 * ratio('native'):.0f}%", ratio("native") >= 0.4),
            ("p99 ≤ 5 ms", f"{fmt_ms(w.get('p99', float('nan')))} ms", w.get("p99", float("inf")) <= 5),
        ]
        wl_warm = cold_med.get("wasmlet | warm")
        wt_warm = cold_med.get("wasmtime serve | warm")
        if wl_warm is not None:
            rows.append(("cold start, warm cache ≤ 10 ms", f"{fmt_ms(wl_warm)} ms", wl_warm <= 10))
        if wl_warm is not None and wt_warm is not None:
            rows.append(("cold start, warm cache ≤ wasmtime serve's (warm)", f"{fmt_ms(wl_warm)} vs {fmt_ms(wt_warm)} ms", wl_warm <= wt_warm))
        if "wasmlet" in rss:
            idle = rss["wasmlet"][0] / 1024
            rows.append(("idle RSS ≤ 20 MiB", f"{idle:.1f} MiB", idle <= 20))
        # Issue 18: each reuse pair against native hyper and its wasmtime serve twin.
        for subject, twin, name, twin_name in [
            ("wasmlet-reuse", "wasmtime-reuse", "reuse", "wasmtime serve, same reuse"),
            ("wasmlet-p3", "wasmtime-p3", "p3 with reuse", "wasmtime serve -Sp3, same reuse"),
        ]:
            rps = m.get(subject, {}).get("rps")
            if not rps:
                continue
            def over(k):
                return rps / m[k]["rps"] if k in m and m[k]["rps"] else float("nan")
            rows.append((f"{name}: requests/s ≥ 60% of native hyper (issue 18)", f"{100 * over('native'):.0f}%", over("native") >= 0.6))
            rows.append((f"{name}: requests/s ≥ 1.5× {twin_name} (issue 18)", f"{over(twin):.2f}×", over(twin) >= 1.5))
        p(f"## Targets (issues 6 and 18; throughput and p99 at {c} connections)")
        p()
        p("| target | measured | met |")
        p("|---|---:|:---:|")
        for name, value, ok in rows:
            p(f"| {name} | {value} | {'yes' if ok else '**no**'} |")
        p()

    if problems:
        p("## Errors under load")
        p()
        for line in problems:
            p(f"- {line}")
        p()

    p("## Commands")
    p()
    p("```sh")
    p(f"# benchmark: {meta.get('invocation', 'bench/run.sh')}")
    for key, lab, cmd in commands:
        p(f"# {lab}")
        p(cmd)
    if "wrk_cmd" in meta:
        p("# load (per server, connection count and repeat)")
        p(meta["wrk_cmd"])
    for entry in cold:
        p(f"# cold start: {entry['label']}")
        p(" ".join(a if re.fullmatch(r"[\w@%+=:,./${}~-]+", a) else shlex.quote(a) for a in entry["cmd"]))
    p("```")


if __name__ == "__main__":
    main()
