#!/usr/bin/env python3
"""A bounded HTTP load loop for scripts/container-test.sh, and the arithmetic on its results.

Every request opens a new TCP connection, as a fresh client behind a Service would, so that
kube-proxy-style DNAT (decided per connection) spreads the requests over the replicas.

    vip_load.py run --url http://198.18.0.1/ --out FILE (--duration S | --until-file F | --requests N)
        Record one CSV line per request: start_ns,end_ns,status,body,local_port (status 0: no
        response; body then holds the error). Stops after S seconds, once F exists, or once N
        requests (over all workers together) have been made. --rate R paces the requests to R a
        second over all workers together (the i-th starts no earlier than i/R s after the first).

    vip_load.py summary FILE [--since NS] [--until NS] [--expect-body TEXT]
        Print `total=… ok=… failed=… bodies={…}` (past 4 distinct bodies, only their number) and
        the failures' local ports, over the requests that *started* in [since, until); exit 1 if
        any failed, or (with --expect-body) answered anything else.

    vip_load.py counter FILE --final C [--initial I]
        The arithmetic of a visit counter (guest/counter/'s `GET /count`: "Hello World! I have
        been seen N times.") whose value went from I to C during the run: every successful answer
        holds one N, and an increment neither lost nor doubled means that the N answered are
        distinct, all in (I, C], and that the increments no answer shows (C - I - ok) are at most
        the failed requests (a request can fail after its increment was made: its replica was
        killed after INCRBY, before the answer reached the client). Prints the numbers; exit 1 if
        an increment was lost or doubled.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import os
import re
import socket
import sys
import threading
import time
import urllib.parse
from collections import Counter


def one_request(host: str, port: int, path: str, timeout: float) -> tuple[int, str, int]:
    """GET on a new connection → (status, body or error, the client's local port)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    # Connected by hand so the local port is known even when the connect fails: it names the
    # connection's conntrack entry (which endpoint the DNAT picked) when a failure is looked into.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect((host, port))
        finally:
            local_port = sock.getsockname()[1]
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.sock = sock
        conn.request("GET", path, headers={"Connection": "close"})
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace").strip(), local_port
    except (OSError, http.client.HTTPException) as e:
        return 0, f"{type(e).__name__}: {e}", local_port
    finally:
        conn.close()
        sock.close()


def run(args: argparse.Namespace) -> int:
    url = urllib.parse.urlsplit(args.url)
    host, port, path = url.hostname, url.port or 80, url.path or "/"
    # --until-file runs are still bounded, in case whoever should create the file never does.
    first = time.monotonic()
    deadline = first + (args.duration or args.max_duration)
    lock = threading.Lock()
    out = open(args.out, "w", newline="", buffering=1)
    writer = csv.writer(out)
    made = 0  # requests taken by a worker so far (--requests, --rate)

    def next_slot() -> int | None:
        """The index of the next request, or None once the run is over."""
        nonlocal made
        if time.monotonic() >= deadline:
            return None
        if args.until_file and os.path.exists(args.until_file):
            return None
        with lock:
            if args.requests and made >= args.requests:
                return None
            made += 1
            return made - 1

    def worker() -> None:
        while (slot := next_slot()) is not None:
            if args.rate:
                wait = first + slot / args.rate - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            start = time.time_ns()
            status, body, local_port = one_request(host, port, path, args.timeout)
            with lock:
                writer.writerow([start, time.time_ns(), status, body[:200], local_port])
            if args.pause:
                time.sleep(args.pause)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(args.workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.close()
    return 0


def summary(args: argparse.Namespace) -> int:
    total = ok = 0
    bodies: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    failed_ports = []
    with open(args.file, newline="") as f:
        for start, _end, status, body, local_port in csv.reader(f):
            start = int(start)
            if start < args.since or (args.until and start >= args.until):
                continue
            total += 1
            if status == "200":
                ok += 1
                bodies[body] += 1
            else:
                errors[f"{status} {body}"[:80]] += 1
                failed_ports.append(local_port)
    failed = total - ok
    line = f"total={total} ok={ok} failed={failed} "
    # A counter answers a different body every time: then only how many.
    line += f"bodies={json.dumps(dict(bodies))}" if len(bodies) <= 4 else f"distinct_bodies={len(bodies)}"
    if errors:
        line += f" errors={json.dumps(dict(errors.most_common(3)))}"
        line += f" failed_local_ports={','.join(failed_ports[:20])}"
    print(line)
    bad = failed > 0 or total == 0
    if args.expect_body is not None:
        bad |= set(bodies) != {args.expect_body}
    return 1 if bad else 0


ANSWER = re.compile(r"Hello World! I have been seen (\d+) times\.")


def counter(args: argparse.Namespace) -> int:
    total = ok = 0
    seen: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    with open(args.file, newline="") as f:
        for _start, _end, status, body, _port in csv.reader(f):
            total += 1
            m = ANSWER.fullmatch(body)
            if status == "200" and m:
                ok += 1
                seen[int(m.group(1))] += 1
            else:
                errors[f"{status} {body}"[:80]] += 1
    failed = total - ok
    made = args.final - args.initial  # increments the store counted during the run
    doubled = sorted(n for n, k in seen.items() if k > 1)
    outside = sorted(n for n in seen if not args.initial < n <= args.final)
    unanswered = made - len(seen)  # increments made that no successful answer shows
    print(
        f"requests={total} ok={ok} failed={failed}; counter {args.initial} -> {args.final} "
        f"(+{made}); expected +{total} - {failed} failed = +{total - failed}"
    )
    print(
        f"distinct N answered={len(seen)} (in ({args.initial}, {args.final}]: "
        f"{len(seen) - len(outside)}); increments with no answer = {made} - {len(seen)} = "
        f"{unanswered} (requests that failed after their increment was made)"
    )
    if errors:
        print(f"failures: {json.dumps(dict(errors.most_common(4)))}")
    bad = []
    if doubled:
        bad.append(f"N answered more than once (a doubled answer): {doubled[:10]}")
    if outside:
        bad.append(f"N outside ({args.initial}, {args.final}] (an increment lost): {outside[:10]}")
    if unanswered < 0:
        bad.append(f"{-unanswered} answered increments missing from the counter (lost)")
    if unanswered > failed:
        bad.append(
            f"{unanswered} increments with no answer but only {failed} failed requests (doubled)"
        )
    for line in bad:
        print(f"BAD: {line}")
    return 1 if bad or total == 0 else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--url", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--duration", type=float)
    r.add_argument("--until-file")
    r.add_argument("--requests", type=int, help="stop after this many requests in all")
    r.add_argument("--rate", type=float, help="requests per second, over all workers")
    r.add_argument("--max-duration", type=float, default=180.0, help="cap for --until-file, seconds")
    r.add_argument("--workers", type=int, default=4)
    r.add_argument("--timeout", type=float, default=2.0, help="per request, seconds")
    r.add_argument("--pause", type=float, default=0.0, help="seconds between a worker's requests")
    s = sub.add_parser("summary")
    s.add_argument("file")
    s.add_argument("--since", type=int, default=0, help="ns since the epoch")
    s.add_argument("--until", type=int, default=0, help="ns since the epoch")
    s.add_argument("--expect-body")
    c = sub.add_parser("counter")
    c.add_argument("file")
    c.add_argument("--final", type=int, required=True, help="the counter's value after the run")
    c.add_argument("--initial", type=int, default=0, help="the counter's value before the run")
    args = ap.parse_args()
    if args.cmd == "run":
        if not args.duration and not args.until_file and not args.requests:
            ap.error("run needs --duration, --until-file or --requests")
        return run(args)
    if args.cmd == "counter":
        return counter(args)
    return summary(args)


if __name__ == "__main__":
    sys.exit(main())
