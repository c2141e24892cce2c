//! The little protobuf and gRPC framing the two greeter fixtures
//! (`grpc_greeter`, wasi:http 0.2, and `grpc_greeter_p3`, 0.3) need, by
//! hand: a `HelloRequest { string name = 1; uint32 count = 2; }` in, a
//! `HelloReply { string message = 1; }` out, each one length-prefixed
//! message. Included by both with `#[path]`.

/// gRPC status codes used here (grpc/doc/statuscodes.md).
pub const OK: u32 = 0;
pub const INVALID_ARGUMENT: u32 = 3;
pub const NOT_FOUND: u32 = 5;
pub const UNIMPLEMENTED: u32 = 12;

/// The largest request message taken; gRPC's own default is 4 MiB.
pub const MAX_REQUEST: usize = 64 * 1024;

/// What a method answers: its replies, then its status and message.
pub fn call(method: &str, request: &[u8]) -> (Vec<Vec<u8>>, u32, String) {
    let Some((name, count)) = decode_request(request) else {
        return (
            Vec::new(),
            INVALID_ARGUMENT,
            "the request is not one HelloRequest".to_string(),
        );
    };
    match method {
        "/demo.Greeter/SayHello" => (vec![reply(&format!("Hello, {name}!"))], OK, String::new()),
        "/demo.Greeter/Count" => (
            (1..=count)
                .map(|i| reply(&format!("{name} #{i}")))
                .collect(),
            OK,
            String::new(),
        ),
        "/demo.Greeter/Fail" => (Vec::new(), NOT_FOUND, format!("no such name: {name}")),
        "/demo.Greeter/Sleep" => (vec![reply(&format!("slept {count} ms"))], OK, String::new()),
        _ => (
            Vec::new(),
            UNIMPLEMENTED,
            format!("unknown method {method}"),
        ),
    }
}

/// The milliseconds `Sleep` waits before its answer, for that method.
pub fn sleep_ms(method: &str, request: &[u8]) -> Option<u32> {
    (method == "/demo.Greeter/Sleep")
        .then(|| decode_request(request).map(|(_, ms)| ms))
        .flatten()
}

/// The trailers that end a call: `grpc-status`, and `grpc-message` when
/// there is one.
pub fn trailers(status: u32, message: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![("grpc-status".to_string(), status.to_string().into_bytes())];
    if !message.is_empty() {
        out.push((
            "grpc-message".to_string(),
            percent_encode(message).into_bytes(),
        ));
    }
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
