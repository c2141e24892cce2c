//! `grpc_greeter`: a gRPC service written as a plain wasi:http 0.2 handler,
//! with hand-written protobuf (two field types are all it needs). The
//! service, in proto3:
//!
//! ```proto
//! package demo;
//! service Greeter {
//!   rpc SayHello (HelloRequest) returns (HelloReply);          // "Hello, NAME!"
//!   rpc Count (HelloRequest) returns (stream HelloReply);      // COUNT replies, "NAME #i"
//!   rpc Fail (HelloRequest) returns (HelloReply);              // status NOT_FOUND (5)
//!   rpc Sleep (HelloRequest) returns (HelloReply);             // waits COUNT ms, then answers
//! }
//! message HelloRequest { string name = 1; uint32 count = 2; }
//! message HelloReply { string message = 1; }
//! ```
//!
//! A gRPC response is a 200 with `content-type: application/grpc`, the
//! length-prefixed messages, and the call's status in the trailers
//! (`grpc-status`, `grpc-message`): what wasi:http's `outgoing-body.finish`
//! carries.

use test_programs::wasi::clocks::monotonic_clock;
use test_programs::{Fields, Guest, IncomingRequest, OutgoingBody, ResponseOutparam};

/// The largest request message taken; gRPC's own default is 4 MiB.
const MAX_REQUEST: usize = 64 * 1024;

/// gRPC status codes used here (grpc/doc/statuscodes.md).
const OK: u32 = 0;
const INVALID_ARGUMENT: u32 = 3;
const NOT_FOUND: u32 = 5;
const UNIMPLEMENTED: u32 = 12;

struct Greeter;

test_programs::export!(Greeter);

impl Guest for Greeter {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let grpc = test_programs::header(&request, "content-type")
            .is_some_and(|v| v.starts_with(b"application/grpc"));
        if !grpc {
            // What the gRPC spec asks of a server for any other content type.
            return test_programs::respond(response_out, 415, "application/grpc only\n");
        }
        let method = test_programs::path(&request);
        let message_in = read_body(request);
        let decoded = decode_request(&message_in);
        if let ("/demo.Greeter/Sleep", Some((_, ms))) = (method.as_str(), &decoded) {
            // Before the response head, as a call that computes its answer
            // would: a deadline that passes here is the host's to answer.
            monotonic_clock::subscribe_duration(u64::from(*ms) * 1_000_000).block();
        }
        let (body, stream) = test_programs::start_response(
            response_out,
            200,
            &[("content-type", b"application/grpc")],
        );
        let (status, message) = match decoded {
            None => (
                INVALID_ARGUMENT,
                "the request is not one HelloRequest".to_string(),
            ),
            Some((name, count)) => match method.as_str() {
                "/demo.Greeter/SayHello" => {
                    test_programs::write_all(&stream, &reply(&format!("Hello, {name}!")));
                    (OK, String::new())
                }
                "/demo.Greeter/Count" => {
                    for i in 1..=count {
                        // One write and flush per message: each goes out as
                        // it is made, as a streaming call's would.
                        test_programs::write_all(&stream, &reply(&format!("{name} #{i}")));
                    }
                    (OK, String::new())
                }
                "/demo.Greeter/Fail" => (NOT_FOUND, format!("no such name: {name}")),
                "/demo.Greeter/Sleep" => {
                    test_programs::write_all(&stream, &reply(&format!("slept {count} ms")));
                    (OK, String::new())
                }
                _ => (UNIMPLEMENTED, format!("unknown method {method}")),
            },
        };
        drop(stream);
        let trailers = Fields::new();
        trailers
            .append("grpc-status", status.to_string().as_bytes())
            .expect("valid trailer");
        if !message.is_empty() {
            trailers
                .append("grpc-message", percent_encode(&message).as_bytes())
                .expect("valid trailer");
        }
        OutgoingBody::finish(body, Some(trailers)).expect("finish body");
    }
}

/// The whole request body, up to [`MAX_REQUEST`] bytes (the rest dropped:
/// decoding then fails and the call answers INVALID_ARGUMENT).
fn read_body(request: IncomingRequest) -> Vec<u8> {
    let mut out = Vec::new();
    let body = request.consume().expect("body consumed once");
    test_programs::for_each_chunk(body, |chunk| {
        let room = MAX_REQUEST.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
    });
    out
}

/// One length-prefixed message holding a HelloRequest: (name, count).
fn decode_request(body: &[u8]) -> Option<(String, u32)> {
    let (&compressed, rest) = body.split_first()?;
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let message = rest.get(4..)?;
    if compressed != 0 || message.len() != len {
        return None;
    }
    let (mut name, mut count) = (String::new(), 0u32);
    let mut at = message;
    while !at.is_empty() {
        let (key, rest) = varint(at)?;
        at = rest;
        match (key >> 3, key & 7) {
            (1, 2) => {
                let (len, rest) = varint(at)?;
                let bytes = rest.get(..usize::try_from(len).ok()?)?;
                name = String::from_utf8(bytes.to_vec()).ok()?;
                at = &rest[bytes.len()..];
            }
            (2, 0) => {
                let (value, rest) = varint(at)?;
                count = u32::try_from(value).ok()?;
                at = rest;
            }
            _ => return None,
        }
    }
    Some((name, count))
}

/// A base-128 varint and what follows it.
fn varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, &byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

/// A HelloReply { message } as one length-prefixed, uncompressed message.
fn reply(message: &str) -> Vec<u8> {
    let mut proto = vec![(1 << 3) | 2];
    let mut len = message.len();
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            proto.push(byte);
            break;
        }
        proto.push(byte | 0x80);
    }
    proto.extend_from_slice(message.as_bytes());
    let mut framed = vec![0];
    framed.extend_from_slice(&(proto.len() as u32).to_be_bytes());
    framed.extend_from_slice(&proto);
    framed
}

/// `grpc-message` is percent-encoded: everything outside printable ASCII,
/// and `%` itself.
fn percent_encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        match byte {
            b' '..=b'~' if byte != b'%' => out.push(byte as char),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

fn main() {}
