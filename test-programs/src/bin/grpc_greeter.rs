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

#[path = "../grpc_proto.rs"]
mod grpc_proto;

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
        if let Some(ms) = grpc_proto::sleep_ms(&method, &message_in) {
            // Before the response head, as a call that computes its answer
            // would: a deadline that passes here is the host's to answer.
            monotonic_clock::subscribe_duration(u64::from(ms) * 1_000_000).block();
        }
        let (body, stream) = test_programs::start_response(
            response_out,
            200,
            &[("content-type", b"application/grpc")],
        );
        let (replies, status, message) = grpc_proto::call(&method, &message_in);
        for reply in replies {
            // One write and flush per message: each goes out as it is
            // made, as a streaming call's would.
            test_programs::write_all(&stream, &reply);
        }
        drop(stream);
        let trailers = Fields::new();
        for (name, value) in grpc_proto::trailers(status, &message) {
            trailers.append(&name, &value).expect("valid trailer");
        }
        OutgoingBody::finish(body, Some(trailers)).expect("finish body");
    }
}

/// The whole request body, up to [`grpc_proto::MAX_REQUEST`] bytes (the
/// rest dropped: decoding then fails and the call answers
/// INVALID_ARGUMENT).
fn read_body(request: IncomingRequest) -> Vec<u8> {
    let mut out = Vec::new();
    let body = request.consume().expect("body consumed once");
    test_programs::for_each_chunk(body, |chunk| {
        let room = grpc_proto::MAX_REQUEST.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
    });
    out
}

fn main() {}
