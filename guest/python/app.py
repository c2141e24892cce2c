"""hello, in Python: the seed's Flask "Hello World!" app as a wasi:http component.

Built with componentize-py against `wit/` (`guest/python/build.sh`). The host
calls `IncomingHandler.handle` once per request, each time in a fresh
instance, so module-level state never carries over from one request to the
next. Routes:

    GET  /                 Hello World!
    POST /echo             the request body, streamed back
    GET  /fetch?url=URL    GET URL through wasi:http/outgoing-handler
    anything else          404
"""

from urllib.parse import parse_qs, urlsplit

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import outgoing_handler, streams
from wit_world.imports.types import (
    Fields,
    IncomingBody,
    IncomingRequest,
    Method_Get,
    Method_Head,
    Method_Post,
    OutgoingBody,
    OutgoingRequest,
    OutgoingResponse,
    ResponseOutparam,
    Scheme_Http,
    Scheme_Https,
)

TEXT_PLAIN = b"text/plain; charset=utf-8"
# wasi:io output streams accept at most 4096 bytes per blocking write.
WRITE_CHUNK = 4096
READ_CHUNK = 65536


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        method = request.method()
        path_with_query = request.path_with_query() or "/"
        path, _, query = path_with_query.partition("?")
        if path == "/" and isinstance(method, (Method_Get, Method_Head)):
            body = b"Hello World!"
            send(response_out, 200, body, head_only=isinstance(method, Method_Head))
        elif path == "/echo" and isinstance(method, Method_Post):
            echo(request, response_out)
        elif path == "/fetch" and isinstance(method, Method_Get):
            url = parse_qs(query).get("url", [None])[0]
            if url is None:
                send(response_out, 400, b"missing ?url=\n")
            else:
                fetch(url, response_out)
        else:
            send(response_out, 404, b"Not Found\n")


def send(response_out, status, body, content_type=TEXT_PLAIN, head_only=False):
    """A response built in memory, sent in one go, with its length declared."""
    headers = Fields.from_list(
        [("content-type", content_type), ("content-length", str(len(body)).encode())]
    )
    response = OutgoingResponse(headers)
    response.set_status_code(status)
    out = response.body()
    ResponseOutparam.set(response_out, Ok(response))
    if not head_only:
        with out.write() as stream:
            if not write_all(stream, body):
                return
    OutgoingBody.finish(out, None)


def echo(request, response_out):
    """Streams the request body back, chunk by chunk: never held whole."""
    content_type = dict(request.headers().entries()).get("content-type", b"application/octet-stream")
    response = OutgoingResponse(Fields.from_list([("content-type", content_type)]))
    response.set_status_code(200)
    out = response.body()
    ResponseOutparam.set(response_out, Ok(response))
    incoming = request.consume()
    with incoming.stream() as source, out.write() as sink:
        for chunk in read_chunks(source):
            if not write_all(sink, chunk):
                return
    IncomingBody.finish(incoming)
    OutgoingBody.finish(out, None)


def fetch(url, response_out):
    """GETs `url` and answers `upstream <status>: <body>`, or 502 with the error."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return send(response_out, 400, f"bad url: {url}\n".encode())
    request = OutgoingRequest(Fields())
    request.set_scheme(Scheme_Https() if parts.scheme == "https" else Scheme_Http())
    request.set_authority(parts.netloc)
    request.set_path_with_query((parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
    try:
        future = outgoing_handler.handle(request, None)
        with future.subscribe() as ready:
            ready.block()
        result = future.get()
        if isinstance(result.value, Err):
            raise Err(result.value.value)
        upstream = result.value.value
    except Err as error:
        return send(response_out, 502, f"outbound error: {error.value}\n".encode())
    status = upstream.status()
    incoming = upstream.consume()
    with incoming.stream() as source:
        body = b"".join(read_chunks(source))
    send(response_out, 200, b"upstream %d: " % status + body)


def write_all(stream, data):
    """Writes `data`; False if the client went away (the response is then
    left unfinished, which the host reports as a cut body, not a trap)."""
    try:
        for start in range(0, len(data), WRITE_CHUNK):
            stream.blocking_write_and_flush(data[start : start + WRITE_CHUNK])
    except Err:
        return False
    return True


def read_chunks(stream):
    """Yields a wasi:io input stream's chunks until it closes."""
    while True:
        try:
            chunk = stream.blocking_read(READ_CHUNK)
        except Err as error:
            if isinstance(error.value, streams.StreamError_Closed):
                return
            raise
        if chunk:
            yield chunk
