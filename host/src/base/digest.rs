//! [`Digest`]: the sha256 of a wasm file, an OCI manifest or a blob.
//!
//! A digest is parsed and printed here only: it prints as `sha256:HEX`
//! (the OCI spelling, used in logs, admin JSON and metrics labels), and
//! [`Digest::hex`] gives the bare `HEX` that names files in the caches.
//! Only sha256 with 64 lowercase hex digits is accepted (the OCI spec's
//! encoding for sha256): the store and the caches key on it, so a digest
//! from a registry can never name a path outside them.

use anyhow::{Result, bail};
use sha2::Digest as _;

const PREFIX: &str = "sha256:";

/// A sha256 digest. Kept as its 64 lowercase hex digits, so that both
/// spellings are at hand without allocating; `Copy`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: [u8; 64],
}

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        let mut hasher = Hasher::default();
        hasher.update(bytes);
        hasher.finish()
    }

    /// Parses `sha256:HEX`, refusing any other algorithm and anything but
    /// 64 lowercase hex digits.
    pub fn parse(text: &str) -> Result<Digest> {
        match text.strip_prefix(PREFIX).and_then(Digest::from_hex) {
            Some(digest) => Ok(digest),
            None => bail!("unsupported digest `{text}` (expected sha256: and 64 hex digits)"),
        }
    }

    /// Parses the bare `HEX` of a file name, if it is one.
    pub fn from_hex(hex: &str) -> Option<Digest> {
        let hex: [u8; 64] = hex.as_bytes().try_into().ok()?;
        hex.iter()
            .all(|&b| is_hex_digit(b))
            .then_some(Digest { hex })
    }

    /// The bare 64 hex digits, as cache and store file names spell them.
    pub fn hex(&self) -> &str {
        std::str::from_utf8(&self.hex).expect("hex digits are ASCII")
    }
}

/// A lowercase hex digit, the only kind a digest is written with.
pub fn is_hex_digit(b: u8) -> bool {
    matches!(b, b'0'..=b'9' | b'a'..=b'f')
}

impl std::fmt::Display for Digest {
    /// `sha256:HEX`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(PREFIX)?;
        f.write_str(self.hex())
    }
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for Digest {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Digest> {
        Digest::parse(text)
    }
}

impl serde::Serialize for Digest {
    /// As printed: `sha256:HEX`.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Hashes bytes as they stream by; [`Hasher::finish`] gives their digest.
#[derive(Default)]
pub struct Hasher(sha2::Sha256);

impl Hasher {
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    pub fn finish(self) -> Digest {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut hex = [0u8; 64];
        for (i, b) in self.0.finalize().iter().enumerate() {
            hex[2 * i] = DIGITS[usize::from(b >> 4)];
            hex[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
        }
        Digest { hex }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// sha256 of "hello world".
    const HELLO: &str = "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9";

    #[test]
    fn hashes_and_prints_both_spellings() {
        let digest = Digest::of(b"hello world");
        assert_eq!(digest.hex(), HELLO);
        assert_eq!(digest.to_string(), format!("sha256:{HELLO}"));
        assert_eq!(format!("{digest:?}"), format!("sha256:{HELLO}"));
        assert_eq!(
            serde_json::to_string(&digest).unwrap(),
            format!("\"sha256:{HELLO}\"")
        );
        let mut hasher = Hasher::default();
        hasher.update(b"hello ");
        hasher.update(b"world");
        assert_eq!(hasher.finish(), digest);
    }

    #[test]
    fn parses_sha256_and_64_lowercase_hex_digits_only() {
        let digest = Digest::parse(&format!("sha256:{HELLO}")).unwrap();
        assert_eq!(digest, Digest::of(b"hello world"));
        assert_eq!(format!("sha256:{HELLO}").parse::<Digest>().unwrap(), digest);
        assert_eq!(Digest::from_hex(HELLO), Some(digest));

        let refused = [
            HELLO.to_string(),                           // no algorithm
            format!("sha256:{}", HELLO.to_uppercase()),  // uppercase
            format!("sha256:{}", &HELLO[1..]),           // short
            format!("sha256:{HELLO}0"),                  // long
            format!("sha256:{}g", &HELLO[1..]),          // not hex
            format!("sha512:{HELLO}"),                   // other algorithm
            format!("SHA256:{HELLO}"),                   // other spelling
            "sha256:../../../../etc/passwd".to_string(), // a path
            String::new(),
        ];
        for text in refused {
            let e = Digest::parse(&text).unwrap_err().to_string();
            assert_eq!(
                e,
                format!("unsupported digest `{text}` (expected sha256: and 64 hex digits)")
            );
        }
        assert_eq!(Digest::from_hex(&HELLO.to_uppercase()), None);
        assert_eq!(Digest::from_hex(&format!("sha256:{HELLO}")), None);
        assert_eq!(Digest::from_hex(&HELLO[2..]), None);
    }
}
