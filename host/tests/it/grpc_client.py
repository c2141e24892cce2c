"""A real gRPC client (grpcio) calling the `grpc_greeter` fixture.

    python3 grpc_client.py HOST:PORT [--tls CA.pem]

Prints one JSON object: each call's outcome (messages, or code and details).
No generated stubs: requests and replies are encoded by hand, as the guest does.
"""
import json
import sys

import grpc


def varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def hello_request(name, count=0):
    data = name.encode()
    msg = b"\x0a" + varint(len(data)) + data
    if count:
        msg += b"\x10" + varint(count)
    return msg


def hello_reply(raw):
    # HelloReply { string message = 1; }: tag 0x0a, a varint length, the text.
    assert raw[0] == 0x0A, raw
    n, shift, i = 0, 0, 1
    while True:
        b = raw[i]
        n |= (b & 0x7F) << shift
        i += 1
        if not b & 0x80:
            break
        shift += 7
    return raw[i : i + n].decode()


def outcome(call):
    try:
        return {"ok": call()}
    except grpc.RpcError as e:
        return {"code": e.code().name, "details": e.details()}


def main():
    addr = sys.argv[1]
    if len(sys.argv) > 3 and sys.argv[2] == "--tls":
        with open(sys.argv[3], "rb") as f:
            channel = grpc.secure_channel(addr, grpc.ssl_channel_credentials(root_certificates=f.read()))
    else:
        channel = grpc.insecure_channel(addr)
    unary = lambda m: channel.unary_unary(m, request_serializer=None, response_deserializer=hello_reply)
    stream = lambda m: channel.unary_stream(m, request_serializer=None, response_deserializer=hello_reply)
    results = {
        "unary": outcome(lambda: unary("/demo.Greeter/SayHello")(hello_request("wasmlet"), timeout=10)),
        "stream": outcome(lambda: list(stream("/demo.Greeter/Count")(hello_request("n", 1000), timeout=10))),
        "error": outcome(lambda: unary("/demo.Greeter/Fail")(hello_request("nobody"), timeout=10)),
        "unknown": outcome(lambda: unary("/demo.Greeter/Nope")(hello_request("x"), timeout=10)),
        "deadline": outcome(lambda: unary("/demo.Greeter/Sleep")(hello_request("s", 5000), timeout=0.3)),
        "in_time": outcome(lambda: unary("/demo.Greeter/Sleep")(hello_request("s", 10), timeout=5)),
    }
    print(json.dumps(results))


if __name__ == "__main__":
    main()
