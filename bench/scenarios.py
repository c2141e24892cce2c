#!/usr/bin/env python3
"""Benchmarks for hot swap, fault isolation, memory growth and metrics cost.

    bench/scenarios.py swap     # issue 3: write -> first response from the new version; rps while swapping
    bench/scenarios.py faults   # issue 4: healthy rps with 20% of traffic looping, vs 0%
    bench/scenarios.py soak     # issue 4: RSS after 10,000 and after 1,000,000 requests
    bench/scenarios.py scrape   # issue 7: rps with /metrics scraped every 100 ms, vs not
    bench/scenarios.py all

Needs target/release/wasmlet and the fixture components (bench/run.sh or
`cargo test --release -p wasmlet --no-run` builds them) and wrk. Every
server it starts is stopped before it exits. Output is markdown.
"""

import glob
import http.client
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WASMLET = os.path.join(ROOT, "target/release/wasmlet")
DURATION = int(os.environ.get("BENCH_DURATION", "10"))
SWAPS = int(os.environ.get("BENCH_SWAPS", "50"))


def component(name):
    """A fixture component built by test-programs-artifacts (newest build)."""
    if name == "hello":
        path = os.path.join(ROOT, "target/wasm32-wasip2/release/hello.wasm")
        if os.path.exists(path):
            return path
    found = sorted(
        glob.glob(os.path.join(ROOT, f"target/release/build/test-programs-artifacts-*/out/**/wasm32-wasip2/release/{name}.wasm"), recursive=True),
        key=os.path.getmtime,
    )
    if not found:
        sys.exit(f"no {name}.wasm: run `cargo test --release -p wasmlet --no-run` first")
    return found[-1]


class Host:
    """`wasmlet serve` on free ports; stopped on exit."""

    def __init__(self, args, env=None):
        environment = dict(os.environ, RUST_LOG="warn,wasmlet::app=info")
        environment.update(env or {})
        self.proc = subprocess.Popen(
            [WASMLET, "serve", *args, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=environment)
        for line in self.proc.stderr:
            if "listening" in line:
                self.public = re.search(r"public=(\S+)", line).group(1)
                self.admin = re.search(r"admin=(\S+)", line).group(1)
                break
        else:
            sys.exit("wasmlet did not start")
        threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def wrk(url, connections=16, duration=DURATION, script=None):
    """Runs wrk; returns (requests/s, non-2xx count, total requests)."""
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", url]
    if script:
        cmd[1:1] = ["-s", script]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, int(non2xx.group(1)) if non2xx else 0, total


def get(addr, path="/"):
    conn = http.client.HTTPConnection(addr, timeout=10)
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read().decode()
    conn.close()
    return r.status, body


def atomic_write(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, path)


def swap_latency(cache):
    """Median and max ms from a completed write to the first new answer."""
    work = tempfile.mkdtemp()
    try:
        versions = {name: open(component(name), "rb").read() for name in ("v1", "v2")}
        handler = os.path.join(work, "handler.wasm")
        atomic_write(handler, versions["v1"])
        with open(os.path.join(work, "wasmlet.toml"), "w") as f:
            f.write('[[route]]\npath = "/..."\ncomponent = "handler.wasm"\n')
        args = ["--config", os.path.join(work, "wasmlet.toml")]
        if cache:
            args += ["--cache-dir", os.path.join(work, "cache")]
        with Host(args) as host:
            if cache:  # load both versions once so every measured swap is a cache hit
                for name in ("v2", "v1"):
                    atomic_write(handler, versions[name])
                    while get(host.public)[1] != name:
                        time.sleep(0.005)
            took = []
            for i in range(SWAPS):
                name = "v2" if i % 2 == 0 else "v1"
                atomic_write(handler, versions[name])
                start = time.perf_counter()
                conn = http.client.HTTPConnection(host.public, timeout=10)
                while True:
                    conn.request("GET", "/")
                    if conn.getresponse().read().decode() == name:
                        break
                took.append((time.perf_counter() - start) * 1e3)
                conn.close()
            return statistics.median(took), max(took)
    finally:
        shutil.rmtree(work)


def scenario_swap():
    print("### Hot swap (issue 3)\n")
    print(f"Write (atomic rename of handler.wasm, v1 <-> v2) to the first response from the new version, {SWAPS} swaps each:\n")
    print("| compile cache | median ms | max ms |\n|---|---|---|")
    for cache in (False, True):
        median, worst = swap_latency(cache)
        print(f"| {'hit (--cache-dir, both versions cached)' if cache else 'none (compile every swap)'} | {median:.1f} | {worst:.1f} |")
    work = tempfile.mkdtemp()
    try:
        handler = os.path.join(work, "handler.wasm")
        v = {n: open(component(n), "rb").read() for n in ("v1", "v2")}
        atomic_write(handler, v["v1"])
        with open(os.path.join(work, "wasmlet.toml"), "w") as f:
            f.write('[[route]]\npath = "/..."\ncomponent = "handler.wasm"\n')
        with Host(["--config", os.path.join(work, "wasmlet.toml"), "--cache-dir", os.path.join(work, "cache")]) as host:
            url = f"http://{host.public}/"
            rows = []
            for swapping in (False, True, False, True, False, True):
                stop = threading.Event()
                swaps = [0]

                def swapper():
                    while not stop.wait(0.2):
                        swaps[0] += 1
                        atomic_write(handler, v["v2" if swaps[0] % 2 else "v1"])
                t = threading.Thread(target=swapper)
                if swapping:
                    t.start()
                rps, non2xx, _ = wrk(url, 16)
                stop.set()
                if swapping:
                    t.join()
                rows.append((swapping, rps, non2xx, swaps[0]))
            base = statistics.median(r[1] for r in rows if not r[0])
            during = statistics.median(r[1] for r in rows if r[0])
            print(f"\nThroughput, wrk 16 connections {DURATION}s, interleaved 3x each, medians: no swapping {base:.0f} req/s; "
                  f"swapping every 200 ms {during:.0f} req/s ({during / base:.2f}x); "
                  f"non-2xx during swapping: {sum(r[2] for r in rows if r[0])}; swaps: {sum(r[3] for r in rows)}\n")
    finally:
        shutil.rmtree(work)


FAULT_LUA = """
counter = 0
request = function()
  counter = counter + 1
  if counter % 5 == 0 then return wrk.format("GET", "/spin") end
  return wrk.format("GET", "/")
end
"""


def scenario_faults():
    print("### Healthy throughput while a looping handler is hammered (issue 4)\n")
    work = tempfile.mkdtemp()
    try:
        toml = os.path.join(work, "wasmlet.toml")
        with open(toml, "w") as f:
            f.write(f'[[route]]\npath = "/..."\ncomponent = "{component("hello")}"\n\n'
                    f'[[route]]\npath = "/spin"\ncomponent = "{component("spin")}"\ntimeout = "100ms"\n')
        script = os.path.join(work, "mix.lua")
        with open(script, "w") as f:
            f.write(FAULT_LUA)
        with Host(["--config", toml]) as host:
            url = f"http://{host.public}/"
            alone, beside, mixed_clean, mixed = [], [], [], []
            for _ in range(3):
                alone.append(wrk(url, 51)[0])
                # A fifth of the clients (13 of 64 connections) only hit the loop.
                spin = subprocess.Popen(["wrk", "-t1", "-c13", f"-d{DURATION + 1}s", url + "spin"],
                                        stdout=subprocess.DEVNULL)
                time.sleep(0.5)
                beside.append(wrk(url, 51)[0])
                spin.wait()
                # Every fifth request of every client hits the loop.
                rps, non2xx, total = wrk(url, 64)
                mixed_clean.append(rps * (total - non2xx) / total)
                rps, non2xx, total = wrk(url, 64, script=script)
                mixed.append(rps * (total - non2xx) / total)
            print("`/spin` loops until its 100 ms limit (504); wrk, interleaved 3x each, medians of healthy 200s per second.\n")
            print("| traffic | healthy 200s/s |\n|---|---|")
            print(f"| 51 connections on `/`, alone | {statistics.median(alone):.0f} |")
            print(f"| 51 connections on `/` + 13 connections on `/spin` | {statistics.median(beside):.0f} |")
            print(f"| 64 connections, no looping requests | {statistics.median(mixed_clean):.0f} |")
            print(f"| 64 connections, every 5th request loops | {statistics.median(mixed):.0f} |\n")
            print("In the last row each client waits 100 ms on every fifth request, which caps its healthy rate at "
                  "4 requests per 100 ms: 2,560/s for 64 clients, whatever the host does.\n")
    finally:
        shutil.rmtree(work)


def scenario_soak():
    print("### Memory over a million requests (issue 4)\n")
    with Host([component("hello")]) as host:
        url = f"http://{host.public}/"
        done = 0
        marks = {}
        for target in (10_000, 1_000_000):
            while done < target:
                rps, _, total = wrk(url, 64, duration=max(1, min(30, int((target - done) / 15000) + 1)))
                done += total
            time.sleep(0.5)
            marks[target] = (done, host.rss_kib())
        print("| after | requests | RSS |\n|---|---|---|")
        for target, (n, rss) in marks.items():
            print(f"| {target:,} | {n:,} | {rss / 1024:.1f} MiB |")
        print()


def scenario_scrape():
    print("### Cost of metrics (issue 7)\n")
    with Host([component("hello")]) as host:
        url = f"http://{host.public}/"
        quiet, scraped = [], []
        for _ in range(3):
            quiet.append(wrk(url, 64)[0])
            stop = threading.Event()
            scrapes = [0]

            def scraper():
                while not stop.wait(0.1):
                    get(host.admin, "/metrics")
                    scrapes[0] += 1
            t = threading.Thread(target=scraper)
            t.start()
            scraped.append(wrk(url, 64)[0])
            stop.set()
            t.join()
        q, s = statistics.median(quiet), statistics.median(scraped)
        print(f"wrk 64 connections {DURATION}s, interleaved 3x each, medians: not scraped {q:.0f} req/s; "
              f"/metrics scraped every 100 ms {s:.0f} req/s ({s / q:.3f}x).\n")


def main():
    which = sys.argv[1] if len(sys.argv) > 1 else "all"
    scenarios = {"swap": scenario_swap, "faults": scenario_faults, "soak": scenario_soak, "scrape": scenario_scrape}
    if which != "all" and which not in scenarios:
        sys.exit(__doc__)
    print(f"Machine: {os.cpu_count()} cores, {subprocess.run(['uname', '-r'], capture_output=True, text=True).stdout.strip()}\n")
    for name, run in scenarios.items():
        if which in ("all", name):
            run()
            sys.stdout.flush()


if __name__ == "__main__":
    main()
