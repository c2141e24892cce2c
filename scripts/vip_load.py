#!/usr/bin/env python3
"""A bounded HTTP load loop for scripts/container-test.sh, and the arithmetic on its results.

Every request opens a new TCP connection, as a fresh client behind a Service would, so that
kube-proxy-style DNAT (decided per connection) spreads the requests over the replicas.

    vip_load.py run --url http://198.18.0.1/ --out FILE (--duration S | --until-file F)
        Record one CSV line per request: start_ns,end_ns,status,body,local_port (status 0: no
        response; body then holds the error). Stops after S seconds or once F exists.

    vip_load.py summary FILE [--since NS] [--until NS] [--expect-body TEXT]
        Print `total=… ok=… failed=… bodies={…}` (and the failures' local ports) over the
        requests that *started* in [since, until); exit 1 if any failed, or (with
        --expect-body) answered anything else.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import os
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
    deadline = time.monotonic() + (args.duration or args.max_duration)
    lock = threading.Lock()
    out = open(args.out, "w", newline="", buffering=1)
    writer = csv.writer(out)

    def keep_going() -> bool:
        if time.monotonic() >= deadline:
            return False
        return not (args.until_file and os.path.exists(args.until_file))

    def worker() -> None:
        while keep_going():
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
    line = f"total={total} ok={ok} failed={failed} bodies={json.dumps(dict(bodies))}"
    if errors:
        line += f" errors={json.dumps(dict(errors.most_common(3)))}"
        line += f" failed_local_ports={','.join(failed_ports[:20])}"
    print(line)
    bad = failed > 0 or total == 0
    if args.expect_body is not None:
        bad |= set(bodies) != {args.expect_body}
    return 1 if bad else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--url", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--duration", type=float)
    r.add_argument("--until-file")
    r.add_argument("--max-duration", type=float, default=180.0, help="cap for --until-file, seconds")
    r.add_argument("--workers", type=int, default=4)
    r.add_argument("--timeout", type=float, default=2.0, help="per request, seconds")
    r.add_argument("--pause", type=float, default=0.0, help="seconds between a worker's requests")
    s = sub.add_parser("summary")
    s.add_argument("file")
    s.add_argument("--since", type=int, default=0, help="ns since the epoch")
    s.add_argument("--until", type=int, default=0, help="ns since the epoch")
    s.add_argument("--expect-body")
    args = ap.parse_args()
    if args.cmd == "run":
        if not args.duration and not args.until_file:
            ap.error("run needs --duration or --until-file")
        return run(args)
    return summary(args)


if __name__ == "__main__":
    sys.exit(main())
