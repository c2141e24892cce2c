//! Text from outside the host (a registry's or a realm's answer, a URL it
//! redirects to, a field of a manifest it sent) made safe to quote in an
//! error: the error is logged, stored in `/handlers` and sent in the
//! `/reload` answer, so what the registry says must neither flood them nor
//! forge a log line.
//!
//! [`quote`] keeps at most [`MAX_QUOTED`] bytes and escapes control
//! characters (newlines included) and the Unicode characters that move or
//! reorder text; every error that carries remote text goes through it.

/// The most of a remote text an error quotes, in bytes.
pub const MAX_QUOTED: usize = 1024;

/// `text` cut to [`MAX_QUOTED`] bytes (on a character boundary, marked
/// with `…`) with its control characters escaped: always one line.
pub fn quote(text: &str) -> String {
    quote_within(text, MAX_QUOTED)
}

/// [`quote`] of bytes that should be UTF-8.
pub fn quote_bytes(bytes: &[u8]) -> String {
    let start = &bytes[..bytes.len().min(MAX_QUOTED * 4)];
    quote(&String::from_utf8_lossy(start))
}

/// [`quote`] with another cap: the last guard over a whole error chain.
pub fn quote_within(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max) + 4);
    for c in text.chars() {
        let start = out.len();
        if needs_escape(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
        if out.len() > max {
            out.truncate(start);
            out.push('…');
            break;
        }
    }
    out
}

/// Control characters, and the ones that break or reorder a line.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}')
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_one_short_line() {
        assert_eq!(quote("manifest unknown"), "manifest unknown");
        assert_eq!(
            quote("a\nINFO forged\r\x1b[31m\u{202e}"),
            "a\\nINFO forged\\r\\u{1b}[31m\\u{202e}"
        );
        let long = "line\n".repeat(100_000);
        let q = quote(&long);
        assert!(q.len() <= MAX_QUOTED + '…'.len_utf8(), "{}", q.len());
        assert!(!q.contains('\n') && q.ends_with('…'));
        // Cut on a character boundary.
        let q = quote(&"é".repeat(2000));
        assert!(q.ends_with('…') && q.len() <= MAX_QUOTED + 3);
        assert_eq!(quote_bytes(b"bad \xff byte\n"), "bad \u{fffd} byte\\n");
        // Quoting twice changes nothing: a guard may run over quoted text.
        let once = quote("x\ny");
        assert_eq!(quote(&once), once);
    }
}
