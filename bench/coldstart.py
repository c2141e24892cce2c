#!/usr/bin/env python3
"""Process helpers for bench/run.sh (standard library only).

  coldstart.py ports N
      Prints N free loopback TCP ports, one per line.
  coldstart.py wait URL [--timeout S]
      Polls URL until it answers 200; exits non-zero on timeout.
  coldstart.py case --cases FILE --label L [--prime K] [--fresh-dir DIR]
                    [--env KEY=VALUE]... -- CMD...
      Appends one cold-start case to FILE (JSON lines). CMD may contain
      {port} and {admin}, replaced by free ports picked for each start.
      --fresh-dir empties DIR before each start (an empty compiled cache);
      --prime starts CMD K times before the measured rounds, not counted (a
      warm cache). --env sets a variable for CMD itself (no `env` wrapper,
      whose own exec would count).
  coldstart.py measure --cases FILE --runs N [--log FILE] --out FILE
      Cold start: the time from spawning CMD to the first 200 on GET /,
      measured with time.perf_counter() around subprocess.Popen and a fast
      http.client polling loop. Primes every case, then runs N rounds, each
      starting every case once, in an order rotated by one each round, so
      that the machine's drift falls on all cases alike. Appends one JSON
      line per case to --out.
"""

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse

POLL_INTERVAL_S = 0.0005  # between connection attempts: 0.5 ms resolution


def free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def get_status(port, path="/", timeout=2.0):
    """Status of GET path on 127.0.0.1:port, or None if no answer yet."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def one_cold_start(argv, log, env=None, timeout_s=60.0, linger_s=0.0):
    port, admin = free_ports(2)
    cmd = [a.replace("{port}", str(port)).replace("{admin}", str(admin)) for a in argv]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
    try:
        while True:
            status = get_status(port)
            if status == 200:
                elapsed = time.perf_counter() - t0
                break
            if proc.poll() is not None:
                raise SystemExit(f"cold start: {cmd[0]} exited with {proc.returncode} before answering 200")
            if time.perf_counter() - t0 > timeout_s:
                raise SystemExit(f"cold start: no 200 from {' '.join(cmd)} within {timeout_s}s")
            time.sleep(POLL_INTERVAL_S)
        if linger_s:
            time.sleep(linger_s)  # let a cache write that follows the first 200 finish
    finally:
        stop(proc)
    return elapsed * 1000.0


def cmd_case(args):
    argv = args.cmd[1:] if args.cmd and args.cmd[0] == "--" else args.cmd
    if not argv:
        raise SystemExit("case: no command given")
    if args.prime and args.fresh_dir:
        raise SystemExit("case: --prime and --fresh-dir exclude each other")
    env = dict(kv.split("=", 1) for kv in args.env)
    case = {"label": args.label, "cmd": argv, "env": env, "prime": args.prime, "fresh_dir": args.fresh_dir}
    with open(args.cases, "a") as out:
        out.write(json.dumps(case) + "\n")


def cmd_measure(args):
    with open(args.cases) as f:
        cases = [json.loads(line) for line in f if line.strip()]
    if not cases:
        raise SystemExit(f"measure: no cases in {args.cases}")
    log = open(args.log, "ab") if args.log else subprocess.DEVNULL
    envs = [dict(os.environ, **case["env"]) for case in cases]
    for case, env in zip(cases, envs):
        for _ in range(case["prime"]):
            one_cold_start(case["cmd"], log, env, linger_s=1.0)
    samples = [[] for _ in cases]
    for round_ in range(args.runs):
        order = [(round_ + k) % len(cases) for k in range(len(cases))]
        for i in order:
            fresh = cases[i]["fresh_dir"]
            if fresh:
                shutil.rmtree(fresh, ignore_errors=True)
                os.makedirs(fresh)
            samples[i].append(one_cold_start(cases[i]["cmd"], log, envs[i]))
            time.sleep(0.2)  # let the previous process's exit settle
    with open(args.out, "a") as out:
        for case, ms in zip(cases, samples):
            cmd = [f"{k}={v}" for k, v in case["env"].items()] + case["cmd"]
            out.write(json.dumps({"label": case["label"], "ms": ms, "cmd": cmd}) + "\n")
            print(f"  {case['label']}: " + ", ".join(f"{s:.1f}" for s in ms) + " ms", file=sys.stderr)


def cmd_wait(args):
    url = urllib.parse.urlsplit(args.url)
    port, path = url.port, url.path or "/"
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        if get_status(port, path) == 200:
            return
        time.sleep(0.01)
    raise SystemExit(f"wait: no 200 from {args.url} within {args.timeout}s")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("ports")
    s.add_argument("n", type=int)
    s = sub.add_parser("wait")
    s.add_argument("url")
    s.add_argument("--timeout", type=float, default=60.0)
    s = sub.add_parser("case")
    s.add_argument("--cases", required=True)
    s.add_argument("--label", required=True)
    s.add_argument("--prime", type=int, default=0)
    s.add_argument("--fresh-dir")
    s.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    s.add_argument("cmd", nargs=argparse.REMAINDER)
    s = sub.add_parser("measure")
    s.add_argument("--cases", required=True)
    s.add_argument("--runs", type=int, default=5)
    s.add_argument("--log")
    s.add_argument("--out", required=True)
    args = p.parse_args()
    if args.what == "ports":
        print("\n".join(map(str, free_ports(args.n))))
    elif args.what == "wait":
        cmd_wait(args)
    elif args.what == "case":
        cmd_case(args)
    else:
        cmd_measure(args)


if __name__ == "__main__":
    main()
