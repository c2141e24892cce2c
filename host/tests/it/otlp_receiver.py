"""An OTLP/HTTP trace receiver for the tests and the benchmark.

Listens on 127.0.0.1, port 0; prints `listening PORT`, then one JSON line
per span it receives, decoded with OpenTelemetry's own protobuf definitions
(the `opentelemetry-proto` package). `--status N` answers every export with
N instead of 200; `--delay S` answers after S seconds (a slow collector);
`--quiet` prints a count of spans per export instead; `--sink` decodes
nothing and prints nothing: it reads each export whole off a kept-alive
connection and answers 200 at once, in a few lines over a raw socket (for
the benchmark, where a collector, or even http.server's parsing, would
take the cores the host is measured on; the host's own metrics count what
it exported).
"""

import argparse
import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}


def value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


SINK_ANSWER = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n"


def sink_connection(conn):
    """Reads requests with a content-length off `conn` and answers each."""
    buf = b""
    with conn:
        while True:
            while b"\r\n\r\n" not in buf:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
            head, _, buf = buf.partition(b"\r\n\r\n")
            length = None
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if length is None:
                sys.exit("otlp_receiver --sink: a request without content-length")
            chunks, have = [buf[:length]], min(len(buf), length)
            buf = buf[length:]
            while have < length:
                data = conn.recv(min(1 << 20, length - have))
                if not data:
                    return
                chunks.append(data)
                have += len(data)
            conn.sendall(SINK_ANSWER)


def sink():
    listener = socket.create_server(("127.0.0.1", 0))
    print(f"listening {listener.getsockname()[1]}", flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=sink_connection, args=(conn,), daemon=True).start()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--status", type=int, default=200)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--sink", action="store_true")
    args = parser.parse_args()
    if args.sink:
        sink()
        return

    class Handler(BaseHTTPRequestHandler):
        # Keep-alive, as a collector does: the exporter then sends every
        # batch on one connection (HTTP/1.0 would mean a connection, and a
        # thread here, per batch).
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            if args.delay:
                time.sleep(args.delay)
            if args.status != 200:
                self.send_response(args.status)
                self.send_header("content-length", "0")
                self.end_headers()
                return
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            lines = []
            count = 0
            for resource_spans in request.resource_spans:
                resource = {a.key: value(a.value) for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        count += 1
                        if args.quiet:
                            continue
                        lines.append(json.dumps({
                            "path": self.path,
                            "content_type": self.headers.get("content-type"),
                            "service": resource.get("service.name"),
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_span_id": span.parent_span_id.hex(),
                            "name": span.name,
                            "kind": KINDS.get(span.kind, str(span.kind)),
                            "start": span.start_time_unix_nano,
                            "end": span.end_time_unix_nano,
                            "status": span.status.code,
                            "attributes": {a.key: value(a.value) for a in span.attributes},
                        }))
            if args.quiet:
                lines.append(json.dumps({"spans": count}))
            sys.stdout.write("".join(line + "\n" for line in lines))
            sys.stdout.flush()
            payload = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *_):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"listening {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
