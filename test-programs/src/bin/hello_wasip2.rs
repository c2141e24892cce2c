//! `hello_wasip2`: `Hello World!` through the `wasip2` crate (the raw
//! WASI 0.2 bindings that `wasi` became): the component exports
//! `wasi:http/incoming-handler` at the version the crate binds.

use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Hello;

wasip2::http::proxy::export!(Hello);

impl wasip2::exports::http::incoming_handler::Guest for Hello {
    fn handle(_request: IncomingRequest, response_out: ResponseOutparam) {
        let headers = Fields::from_list(&[(
            "content-type".to_string(),
            b"text/plain; charset=utf-8".to_vec(),
        )])
        .expect("valid header");
        let response = OutgoingResponse::new(headers);
        let body = response.body().expect("body taken once");
        ResponseOutparam::set(response_out, Ok(response));
        let out = body.write().expect("stream taken once");
        out.blocking_write_and_flush(b"Hello World!")
            .expect("client reads");
        drop(out);
        OutgoingBody::finish(body, None).expect("body finished once");
    }
}

fn main() {}
