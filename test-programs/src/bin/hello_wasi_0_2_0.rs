//! `hello_wasi_0_2_0`: `Hello World!` through the `wasi` crate 0.13.0,
//! whose bindings are wasi 0.2.0: the component exports
//! `wasi:http/incoming-handler@0.2.0`, the oldest 0.2 version a host serves.

use wasi_0_2_0::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Hello;

wasi_0_2_0::http::proxy::export!(Hello with_types_in wasi_0_2_0);

impl wasi_0_2_0::exports::http::incoming_handler::Guest for Hello {
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
