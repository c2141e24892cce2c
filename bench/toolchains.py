#!/usr/bin/env python3
"""Python and JavaScript handlers: wasmlet against `wasmtime serve` on the
same components, side by side (standard library only; wrk drives the load).

  toolchains.py --wasmlet BIN --wasmtime BIN --component LANG=FILE... [--out FILE]

For each component, both servers run at once and are measured interleaved:

- requests/s and p50/p99 on `GET /` at each connection count (medians of
  the repeats; the servers alternate run by run);
- cold start to the first 200, from an empty and from a warm compile cache
  (cases interleaved round by round, via coldstart.py);
- memory as a pod's limit would see it, taken as PSS (/proc/PID/smaps_rollup):
  idle after a start from an empty cache and from a warm one, the peak under
  load, and per in-flight instance (PSS with N requests held open in the
  handler, less idle, over N: each open request is an instance that has
  read the request head and waits for the rest of its body).

Environment: BENCH_DURATION (10), BENCH_WARMUP (2), BENCH_REPEATS (3),
BENCH_CONNECTIONS ("16 64"), BENCH_COLD_RUNS (5), BENCH_COLD_EMPTY_RUNS (3),
BENCH_HELD (32: requests held open for the per-instance memory).
"""

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import coldstart  # noqa: E402

ENV = os.environ
DURATION = int(ENV.get("BENCH_DURATION", "10"))
WARMUP = int(ENV.get("BENCH_WARMUP", "2"))
REPEATS = int(ENV.get("BENCH_REPEATS", "3"))
CONNECTIONS = [int(c) for c in ENV.get("BENCH_CONNECTIONS", "16 64").split()]
COLD_RUNS = int(ENV.get("BENCH_COLD_RUNS", "5"))
COLD_EMPTY_RUNS = int(ENV.get("BENCH_COLD_EMPTY_RUNS", "3"))
HELD = int(ENV.get("BENCH_HELD", "32"))
START_TIMEOUT_S = 300.0  # compiling an 18 MB component from scratch


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def pss_kib(pid):
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    raise RuntimeError("no Pss line")


class Server:
    """One server process on a free port; `cmd` may contain {port}, {admin}."""

    def __init__(self, name, cmd, env, logfile):
        self.name = name
        self.port, self.admin = coldstart.free_ports(2)
        self.cmd = [a.replace("{port}", str(self.port)).replace("{admin}", str(self.admin)) for a in cmd]
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=logfile, stderr=logfile,
                                     env=dict(ENV, **env))
        deadline = time.monotonic() + START_TIMEOUT_S
        while coldstart.get_status(self.port) != 200:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{name}: did not start ({' '.join(self.cmd)})")
            time.sleep(0.05)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/"

    def pss(self):
        return pss_kib(self.proc.pid)

    def stop(self):
        coldstart.stop(self.proc)


class PeakPss:
    """Samples a process's PSS every 100 ms while in a `with` block."""

    def __init__(self, pid):
        self.pid, self.peak, self._stop = pid, 0, threading.Event()

    def __enter__(self):
        def sample():
            while not self._stop.is_set():
                try:
                    self.peak = max(self.peak, pss_kib(self.pid))
                except (OSError, RuntimeError):
                    return
                self._stop.wait(0.1)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def wrk(url, conns, seconds):
    threads = min(conns, 2)
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--timeout", "10s", "--latency", url],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"^Requests/sec:\s*([0-9.]+)", out, re.M).group(1))
    lat = {}
    for pct in ("50", "99"):
        m = re.search(rf"^\s*{pct}%\s+([0-9.]+)(us|ms|s)", out, re.M)
        lat[pct] = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)] if m else float("nan")
    errors = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    sock = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "p50": lat["50"], "p99": lat["99"],
            "non2xx": int(errors.group(1)) if errors else 0, "sockerr": sock.group(1) if sock else ""}


def hold_requests(port, n):
    """Opens n POST /echo requests whose body never finishes: n instances
    waiting in the handler. Returns the sockets (close them to release)."""
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000\r\n\r\n" + b"x" * 1024)
        socks.append(s)
    return socks


def per_instance_kib(server, n):
    idle = server.pss()
    socks = hold_requests(server.port, n)
    time.sleep(1.5)  # every instance created and blocked reading
    held = server.pss()
    for s in socks:
        s.close()
    time.sleep(0.5)
    return (held - idle) / n, idle, held


def measure_component(lang, component, args, work, results):
    logfile = open(os.path.join(work, f"{lang}.log"), "ab")
    wasmlet_cmd = [args.wasmlet, "serve", component, "--listen", "127.0.0.1:{port}",
                   "--admin-listen", "127.0.0.1:{admin}"]
    wasmtime_cmd = [args.wasmtime, "serve", "-Scli", "--addr", "127.0.0.1:{port}", component]
    r = results.setdefault(lang, {"size": os.path.getsize(component)})

    # Cold starts: warm caches first (primed once), then empty ones.
    warm_cases = os.path.join(work, f"{lang}-cold-warm.jsonl")
    empty_cases = os.path.join(work, f"{lang}-cold-empty.jsonl")
    for path in (warm_cases, empty_cases):
        open(path, "w").close()

    def case(path, label, cmd, env=(), prime=0, fresh=None):
        with open(path, "a") as f:
            f.write(json.dumps({"label": label, "cmd": cmd, "env": dict(env), "prime": prime,
                                "fresh_dir": fresh}) + "\n")

    wl_warm, wt_warm = os.path.join(work, f"{lang}-wl-warm"), os.path.join(work, f"{lang}-wt-warm")
    wl_empty, wt_empty = os.path.join(work, f"{lang}-wl-empty"), os.path.join(work, f"{lang}-wt-empty")
    case(warm_cases, "wasmlet | warm", wasmlet_cmd + ["--cache-dir", wl_warm], {"RUST_LOG": "warn"}, prime=1)
    case(warm_cases, "wasmtime serve | warm", wasmtime_cmd, {"XDG_CACHE_HOME": wt_warm}, prime=1)
    case(empty_cases, "wasmlet | empty", wasmlet_cmd + ["--cache-dir", wl_empty], {"RUST_LOG": "warn"},
         fresh=wl_empty)
    case(empty_cases, "wasmtime serve | empty", wasmtime_cmd, {"XDG_CACHE_HOME": wt_empty}, fresh=wt_empty)
    for path, runs in ((warm_cases, COLD_RUNS), (empty_cases, COLD_EMPTY_RUNS)):
        out = path + ".out"
        coldstart_measure(path, runs, out, logfile)
        with open(out) as f:
            for line in f:
                row = json.loads(line)
                r.setdefault("cold", {})[row["label"]] = row["ms"]

    # Memory after a start: from an empty cache, and from the warm one.
    shutil.rmtree(wl_empty, ignore_errors=True)
    for label, cache in (("empty", wl_empty), ("warm", wl_warm)):
        s = Server(f"wasmlet-{lang}", wasmlet_cmd + ["--cache-dir", cache], {"RUST_LOG": "warn"}, logfile)
        time.sleep(1.0)
        r[f"wasmlet_pss_after_{label}_start"] = s.pss()
        s.stop()

    # Throughput, both servers up, interleaved run by run.
    servers = {
        "wasmlet": Server(f"wasmlet-{lang}", wasmlet_cmd + ["--cache-dir", wl_warm], {"RUST_LOG": "warn"}, logfile),
        "wasmtime": Server(f"wasmtime-{lang}", wasmtime_cmd, {"XDG_CACHE_HOME": wt_warm}, logfile),
    }
    try:
        time.sleep(1.0)
        for key, s in servers.items():
            r.setdefault(key, {})["idle_pss"] = s.pss()
        for key, s in servers.items():
            per, idle, held = per_instance_kib(s, HELD)
            r[key]["per_instance_kib"] = per
            r[key]["held_pss"] = held
        for conns in CONNECTIONS:
            for key, s in servers.items():
                if WARMUP:
                    wrk(s.url, conns, WARMUP)
            runs = {key: [] for key in servers}
            for rep in range(REPEATS):
                for key, s in servers.items():
                    with PeakPss(s.proc.pid) as peak:
                        res = wrk(s.url, conns, DURATION)
                    res["peak_pss"] = peak.peak
                    runs[key].append(res)
                    log(f"{lang}, {conns} connections, repeat {rep + 1}, {key}: {res['rps']:.0f} req/s")
            for key in servers:
                r[key][f"c{conns}"] = runs[key]
    finally:
        for s in servers.values():
            s.stop()


def coldstart_measure(cases, runs, out, logfile):
    ns = argparse.Namespace(cases=cases, runs=runs, log=None, out=out)
    # coldstart's own timeout is 60 s; an empty-cache start of a large
    # component can take longer on a busy 2-core machine.
    original = coldstart.one_cold_start

    def patient(argv, log, env=None, timeout_s=START_TIMEOUT_S, linger_s=0.0):
        return original(argv, logfile, env, timeout_s=START_TIMEOUT_S, linger_s=linger_s)

    coldstart.one_cold_start = patient
    try:
        coldstart.cmd_measure(ns)
    finally:
        coldstart.one_cold_start = original


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def mib(kib):
    return f"{kib / 1024:.1f} MiB"


def report(results, meta):
    lines = ["# Python and JavaScript handlers: wasmlet and wasmtime serve", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items()]
    lines += ["", "## Requests/s on GET / (median of the repeats; p50 / p99 in ms)", ""]
    lines += ["| handler | conns | wasmlet req/s | wasmtime serve req/s | ratio | wasmlet p50 / p99 | wasmtime p50 / p99 | errors |",
              "|---|---:|---:|---:|---:|---:|---:|---|"]
    for lang, r in results.items():
        for c in CONNECTIONS:
            wl, wt = r["wasmlet"][f"c{c}"], r["wasmtime"][f"c{c}"]
            a, b = med([x["rps"] for x in wl]), med([x["rps"] for x in wt])
            errors = sum(x["non2xx"] for x in wl + wt)
            lines.append(
                f"| {lang} | {c} | {a:,.0f} | {b:,.0f} | {a / b:.2f}x | "
                f"{med([x['p50'] for x in wl]):.2f} / {med([x['p99'] for x in wl]):.2f} | "
                f"{med([x['p50'] for x in wt]):.2f} / {med([x['p99'] for x in wt]):.2f} | {errors or 'none'} |")
    lines += ["", "## Cold start to the first 200 (median, min-max, ms)", "",
              "| handler | server | compile cache | median | range | runs |", "|---|---|---|---:|---:|---:|"]
    for lang, r in results.items():
        for label, ms in r["cold"].items():
            server, cache = (part.strip() for part in label.split("|"))
            lines.append(f"| {lang} | {server} | {cache} | {med(ms):.1f} | {min(ms):.1f}-{max(ms):.1f} | {len(ms)} |")
    lines += ["", "## Memory (PSS)", "",
              "| handler | server | idle | peak under load | per in-flight instance | after an empty-cache start | after a warm-cache start |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for lang, r in results.items():
        for key in ("wasmlet", "wasmtime"):
            peak = max(x["peak_pss"] for c in CONNECTIONS for x in r[key][f"c{c}"])
            empty = mib(r["wasmlet_pss_after_empty_start"]) if key == "wasmlet" else "—"
            warm = mib(r["wasmlet_pss_after_warm_start"]) if key == "wasmlet" else "—"
            lines.append(f"| {lang} ({r['size'] / 1e6:.1f} MB) | {key} | {mib(r[key]['idle_pss'])} | {mib(peak)} | "
                         f"{r[key]['per_instance_kib'] / 1024:.2f} MiB | {empty} | {warm} |")
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--wasmlet", required=True)
    p.add_argument("--wasmtime", required=True)
    p.add_argument("--component", action="append", required=True, metavar="LANG=FILE")
    p.add_argument("--out")
    p.add_argument("--json")
    args = p.parse_args()
    work = tempfile.mkdtemp(prefix="wasmlet-bench-toolchains.")
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{os.cpu_count()} CPUs, {os.uname().release}",
        "wasmlet": subprocess.run([args.wasmlet, "--version"], capture_output=True, text=True).stdout.strip(),
        "wasmtime": subprocess.run([args.wasmtime, "--version"], capture_output=True, text=True).stdout.strip(),
        "settings": f"duration {DURATION}s, warm-up {WARMUP}s, repeats {REPEATS}, cold runs {COLD_RUNS} warm / "
                    f"{COLD_EMPTY_RUNS} empty, {HELD} held requests",
        "commands": "wasmlet serve FILE --cache-dir DIR; wasmtime serve -Scli FILE (its default cache in XDG_CACHE_HOME)",
    }
    results = {}
    try:
        for spec in args.component:
            lang, path = spec.split("=", 1)
            measure_component(lang, os.path.abspath(path), args, work, results)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = report(results, meta)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=1)
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
