"""hello-counter, in Python: "Hello World!" with a visit counter in wasi:keyvalue.

The step after the seed's Flask hello (Flask + Redis: "Hello World! I have
been seen N times."), as a wasi:http component built with componentize-py
against `wit/`'s `wasmlet:handler/keyvalue-handler` world
(`guest/counter/python/build.sh`). Routes:

    GET /        Hello World!
    GET /count   adds one to key `hits` (atomics.increment) and answers
                 Hello World! I have been seen N times.
    anything else  404 (405 for another method on / or /count)

It opens the store named "": `wasmtime serve -Skeyvalue`'s one store, and the
route's `default` store under wasmlet. A store error is answered with 503.
"""

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import atomics, store
from wit_world.imports.types import (
    Fields,
    IncomingRequest,
    Method_Get,
    Method_Head,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)

TEXT_PLAIN = b"text/plain; charset=utf-8"
# The store: "" is `wasmtime serve -Skeyvalue`'s one store, wasmlet's `default`.
STORE = ""
# The key counted, as in the Flask + Redis tutorial (`redis.incr('hits')`).
HITS = "hits"


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        method = request.method()
        path = (request.path_with_query() or "/").partition("?")[0]
        head = isinstance(method, Method_Head)
        if path == "/" and isinstance(method, (Method_Get, Method_Head)):
            send(response_out, 200, b"Hello World!", head_only=head)
        elif path == "/count" and isinstance(method, Method_Get):
            count(response_out)
        elif path in ("/", "/count"):
            allow = b"GET, HEAD" if path == "/" else b"GET"
            send(response_out, 405, b"Method Not Allowed\n", allow=allow)
        else:
            send(response_out, 404, b"Not Found\n")


def count(response_out):
    """One more visit, counted atomically by the store."""
    try:
        with store.open(STORE) as bucket:
            hits = atomics.increment(bucket, HITS, 1)
    except Err as error:
        return send(response_out, 503, f"key-value store error: {error.value}\n".encode())
    send(response_out, 200, f"Hello World! I have been seen {hits} times.".encode())


def send(response_out, status, body, head_only=False, allow=None):
    """A response built in memory, sent in one go, with its length declared."""
    headers = [("content-type", TEXT_PLAIN)]
    if allow is not None:
        headers.append(("allow", allow))
    if not head_only:
        headers.append(("content-length", str(len(body)).encode()))
    response = OutgoingResponse(Fields.from_list(headers))
    response.set_status_code(status)
    out = response.body()
    ResponseOutparam.set(response_out, Ok(response))
    if not head_only:
        with out.write() as stream:
            stream.blocking_write_and_flush(body)
    OutgoingBody.finish(out, None)
