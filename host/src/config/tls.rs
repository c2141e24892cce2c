//! The public port's certificate and key (`--tls-cert`, `--tls-key`): two
//! PEM files read and checked as a pair, and when the certificate expires.
//!
//! A pair loads only whole: a certificate chain (leaf first), a private
//! key rustls can sign with (PKCS#8, PKCS#1 or SEC1), and the key matching
//! the leaf's public key. The leaf's `notAfter` is read from its DER by
//! hand (a few lines; rustls-webpki keeps its parsed validity private).

use anyhow::{Context, Result, anyhow, bail};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

/// Largest certificate or key file read, in bytes: a chain of a few
/// certificates is under 10 KiB.
const MAX_PEM_FILE: u64 = 1 << 20;

/// A certificate chain and its key, ready to serve (no `Debug`: the
/// files' bytes hold the private key).
pub struct KeyPair {
    pub certified: Arc<CertifiedKey>,
    /// The leaf certificate's `notAfter`.
    pub not_after: SystemTime,
    /// The files' bytes as read, to tell a changed pair from the same one.
    pub files: (Vec<u8>, Vec<u8>),
}

/// Reads and checks the pair `cert` and `key` with `provider`'s key
/// loader; each error names the flag and file at fault.
pub fn load(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<KeyPair> {
    let cert_pem = read(cert, "--tls-cert")?;
    let key_pem = read(key, "--tls-key")?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("--tls-cert `{}`: not PEM: {e}", cert.display()))?;
    let Some(leaf) = chain.first() else {
        bail!(
            "--tls-cert `{}`: no certificate in it (expected `-----BEGIN CERTIFICATE-----`)",
            cert.display()
        );
    };
    let not_after = not_after(leaf).ok_or_else(|| {
        anyhow!(
            "--tls-cert `{}`: the first certificate is not a readable X.509 certificate",
            cert.display()
        )
    })?;
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        anyhow!(
            "--tls-key `{}`: no private key in it (PKCS#8, PKCS#1 or SEC1 PEM): {e}",
            key.display()
        )
    })?;
    let certified = CertifiedKey::from_der(chain, private, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => anyhow!(
            "--tls-key `{}` is not the key of the certificate in --tls-cert `{}`",
            key.display(),
            cert.display()
        ),
        e => anyhow!("--tls-key `{}`: {e}", key.display()),
    })?;
    Ok(KeyPair {
        certified: Arc::new(certified),
        not_after,
        files: (cert_pem, key_pem),
    })
}

fn read(path: &Path, flag: &str) -> Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path)
        .with_context(|| format!("{flag} `{}`: cannot open", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_FILE + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("{flag} `{}`: cannot read", path.display()))?;
    if bytes.len() as u64 > MAX_PEM_FILE {
        bail!(
            "{flag} `{}`: larger than {MAX_PEM_FILE} bytes",
            path.display()
        );
    }
    Ok(bytes)
}

/// The `notAfter` of an X.509 certificate in DER (RFC 5280 section
/// 4.1): Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version
/// OPTIONAL, serialNumber INTEGER, signature SEQUENCE, issuer SEQUENCE,
/// validity SEQUENCE { notBefore, notAfter }, ... }, ... }.
pub fn not_after(der: &[u8]) -> Option<SystemTime> {
    const SEQUENCE: u8 = 0x30;
    const INTEGER: u8 = 0x02;
    const VERSION: u8 = 0xa0;
    let (SEQUENCE, certificate, _) = element(der)? else {
        return None;
    };
    let (SEQUENCE, mut tbs, _) = element(certificate)? else {
        return None;
    };
    if let (VERSION, _, rest) = element(tbs)? {
        tbs = rest;
    }
    for expected in [INTEGER, SEQUENCE, SEQUENCE] {
        let (tag, _, rest) = element(tbs)?;
        if tag != expected {
            return None;
        }
        tbs = rest;
    }
    let (SEQUENCE, validity, _) = element(tbs)? else {
        return None;
    };
    let (_, _, rest) = element(validity)?;
    let (tag, time, _) = element(rest)?;
    time_of(tag, time)
}

/// One DER element at the start of `der`: its tag, its contents, and what
/// follows it.
fn element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let length = rest[..count]
            .iter()
            .fold(0usize, |n, &b| (n << 8) | usize::from(b));
        (length, &rest[count..])
    };
    (rest.len() >= length).then(|| (tag, &rest[..length], &rest[length..]))
}

/// UTCTime (`YYMMDDHHMMSSZ`, 19YY from 50) or GeneralizedTime
/// (`YYYYMMDDHHMMSSZ`), as RFC 5280 section 4.1.2.5 writes them.
fn time_of(tag: u8, contents: &[u8]) -> Option<SystemTime> {
    const UTC_TIME: u8 = 0x17;
    const GENERALIZED_TIME: u8 = 0x18;
    let text = std::str::from_utf8(contents).ok()?;
    if !text.is_ascii() {
        return None;
    }
    let (year, rest) = match tag {
        UTC_TIME => {
            let yy: u32 = text.get(..2)?.parse().ok()?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &text[2..])
        }
        GENERALIZED_TIME => (text.get(..4)?.parse().ok()?, &text[4..]),
        _ => return None,
    };
    let digits = rest.strip_suffix('Z')?;
    if digits.len() != 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let rfc3339 = format!(
        "{year:04}-{}-{}T{}:{}:{}Z",
        &digits[0..2],
        &digits[2..4],
        &digits[4..6],
        &digits[6..8],
        &digits[8..10]
    );
    humantime::parse_rfc3339(&rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> SystemTime {
        humantime::parse_rfc3339(rfc3339).unwrap()
    }

    #[test]
    fn times_are_read_as_rfc_5280_writes_them() {
        assert_eq!(
            time_of(0x17, b"270105093000Z"),
            Some(at("2027-01-05T09:30:00Z"))
        );
        assert_eq!(
            time_of(0x17, b"991231235959Z"),
            Some(at("1999-12-31T23:59:59Z"))
        );
        assert_eq!(
            time_of(0x18, b"20500101000000Z"),
            Some(at("2050-01-01T00:00:00Z"))
        );
        assert_eq!(time_of(0x17, b"2701050930Z"), None);
        assert_eq!(time_of(0x17, b"270105093000+0100"), None);
        assert_eq!(time_of(0x04, b"270105093000Z"), None);
    }

    #[test]
    fn der_elements_with_long_lengths_are_read_and_bounded() {
        let mut long = vec![0x04, 0x82, 0x01, 0x00];
        long.extend([7u8; 256]);
        long.push(0x05);
        let (tag, contents, rest) = element(&long).unwrap();
        assert_eq!((tag, contents.len(), rest), (0x04, 256, &[0x05][..]));
        assert_eq!(element(&[0x04, 0x82, 0x01]), None);
        assert_eq!(element(&[0x04, 0x05, 1, 2]), None);
        assert_eq!(not_after(b"not a certificate"), None);
    }
}
