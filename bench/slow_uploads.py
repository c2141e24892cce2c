"""The measurement behind --min-body-rate's default: N stalled uploads (head sent, body never)
against --max-in-flight N, and how long until a fresh request is served.

    python3 bench/slow_uploads.py target/release/wasmlet COUNT_WASM 512 [extra flags...]

COUNT_WASM is the `count` fixture (target/release/build/test-programs-artifacts-*/out/wasm/
wasm32-wasip2/release/count.wasm); raise `ulimit -n` above N first. Measured on 2 cores
(2026-12-03): 4.2 s, all 408, with the default; 19.3 s, all 504 (the request timeout), with
--min-body-rate 0."""
import asyncio, re, subprocess, sys, time

async def main():
    binary, wasm, n, *extra = sys.argv[1:]
    n = int(n)
    p = subprocess.Popen([binary, "serve", wasm, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
                          "--max-in-flight", str(n), *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         env={"RUST_LOG": "warn,wasmlet=info"}, text=True)
    port = None
    for line in p.stdout:
        m = re.search(r"public=127.0.0.1:(\d+)", line)
        if m:
            port = int(m.group(1)); break
    # Drain the log so the pipe never fills.
    asyncio.get_running_loop().run_in_executor(None, lambda: [None for _ in p.stdout])
    held = []
    for _ in range(n):
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n")
        await w.drain()
        held.append((r, w))
    await asyncio.sleep(0.5)
    started = time.monotonic()
    while True:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\nconnection: close\r\n\r\na")
        reply = await r.read()
        w.close()
        if reply.startswith(b"HTTP/1.1 200"):
            break
        await asyncio.sleep(0.05)
    served = time.monotonic() - started
    codes = {}
    for r, w in held:
        try:
            line = await asyncio.wait_for(r.readline(), 30)
        except Exception as e:
            line = repr(e).encode()
        codes[line[:12]] = codes.get(line[:12], 0) + 1
    print(f"{n} stalled uploads, flags {extra}: a fresh request served after {served:.2f}s; stalled ones got {codes}")
    p.kill()

asyncio.run(main())
