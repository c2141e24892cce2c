//! `grpc_greeter_p3`: the `grpc_greeter` service (see its doc for the
//! proto) as a wasi:http 0.3 handler (the `wasip3` crate). The call's
//! status travels in the response's trailers future, written after the
//! last message.

use wasip3::clocks::monotonic_clock;
use wasip3::http::types::{ErrorCode, Fields, Request, Response};
use wasip3::{wit_bindgen, wit_future, wit_stream};

#[path = "../grpc_proto.rs"]
mod grpc_proto;

wasip3::http::service::export!(Greeter);

struct Greeter;

impl wasip3::exports::http::handler::Guest for Greeter {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let grpc = request
            .get_headers()
            .get("content-type")
            .first()
            .is_some_and(|v| v.starts_with(b"application/grpc"));
        if !grpc {
            // What the gRPC spec asks of a server for any other content type.
            let response = Response::new(Fields::new(), None, wit_future::new(|| Ok(None)).1).0;
            response.set_status_code(415).expect("valid status");
            return Ok(response);
        }
        let method = request.get_path_with_query().unwrap_or_default();
        let (_, done) = wit_future::new(|| Ok(()));
        let (body, _trailers) = Request::consume_body(request, done);
        let mut message_in = body.collect().await;
        message_in.truncate(grpc_proto::MAX_REQUEST);
        if let Some(ms) = grpc_proto::sleep_ms(&method, &message_in) {
            // Before the response head: a deadline that passes here is the
            // host's to answer.
            monotonic_clock::wait_for(u64::from(ms) * 1_000_000).await;
        }
        let (replies, status, message) = grpc_proto::call(&method, &message_in);
        let headers =
            Fields::from_list(&[("content-type".to_string(), b"application/grpc".to_vec())])
                .expect("valid header");
        let (mut writer, reader) = wit_stream::new();
        let (trailers_out, trailers_in) = wit_future::new(|| Ok(None));
        let (response, _sent) = Response::new(headers, Some(reader), trailers_in);
        wit_bindgen::spawn_local(async move {
            for reply in replies {
                // One write per message: each goes out as it is made.
                if !writer.write_all(reply).await.is_empty() {
                    return; // the client went away
                }
            }
            drop(writer);
            let trailers =
                Fields::from_list(&grpc_proto::trailers(status, &message)).expect("valid trailers");
            let _ = trailers_out.write(Ok(Some(trailers))).await;
        });
        Ok(response)
    }
}

fn main() {}
