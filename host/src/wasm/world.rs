//! Which wasi:http handler interface a component exports, read from its
//! binary before wasmtime compiles it.
//!
//! wasmlet serves `wasi:http/incoming-handler@0.2.x` (the `wasi:http/proxy`
//! world, WASIp2) and `wasi:http/handler@0.3.0` (the `wasi:http/service`
//! world, WASIp3, as wasmtime 48 implements it; see [`crate::run::p3`]). A
//! handler built against a later 0.3.x release would not link against
//! wasmtime 48's 0.3.0, so it is refused here, before compiling, with a line
//! that says so.

use anyhow::{Context, Result, bail};
use wasmparser::{Parser, Payload};

/// The p2 handler interface, without its version.
pub const P2_HANDLER: &str = "wasi:http/incoming-handler@";
/// The p3 handler interface, without its version.
pub const P3_HANDLER: &str = "wasi:http/handler@";
/// The one wasi:http 0.3 release wasmtime 48 implements.
pub const P3_VERSION: &str = "0.3.0";

/// The handler interfaces among a component's top-level exports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpWorld {
    /// `wasi:http/incoming-handler@VERSION` (WASIp2): served.
    P2(String),
    /// `wasi:http/handler@VERSION` (WASIp3) and no p2 handler: served
    /// when VERSION is [`P3_VERSION`].
    P3(String),
    /// Neither.
    None,
}

/// Reads the top-level export names of the component in `wasm`.
pub fn of_component(wasm: &[u8]) -> Result<HttpWorld> {
    let mut depth = 0usize;
    let (mut p2, mut p3) = (None, None);
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.context("malformed WebAssembly")? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentExportSection(reader) if depth == 0 => {
                for export in reader {
                    let name = export.context("malformed export section")?.name.name;
                    if let Some(version) = name.strip_prefix(P2_HANDLER) {
                        p2 = Some(version.to_string());
                    } else if let Some(version) = name.strip_prefix(P3_HANDLER) {
                        p3 = Some(version.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    Ok(match (p2, p3) {
        (Some(version), _) => HttpWorld::P2(version),
        (None, Some(version)) => HttpWorld::P3(version),
        (None, None) => HttpWorld::None,
    })
}

impl HttpWorld {
    /// The exported handler interface, with its version, for `wasmlet check`.
    pub fn export(&self) -> Option<String> {
        match self {
            HttpWorld::P2(version) => Some(format!("{P2_HANDLER}{version}")),
            HttpWorld::P3(version) => Some(format!("{P3_HANDLER}{version}")),
            HttpWorld::None => None,
        }
    }
}

/// Refuses a WASIp3 handler of a release this host cannot link, with a line
/// saying what it is and what to build instead; anything else is left to
/// the checks after compiling.
pub fn check_p3_version(world: &HttpWorld) -> Result<()> {
    if let HttpWorld::P3(version) = world
        && version != P3_VERSION
    {
        bail!(
            "exports `{P3_HANDLER}{version}`, but this host (wasmtime 48) implements wasi:http \
             {P3_VERSION} only, and a 0.3 handler links against exactly that release: build it \
             against wasi:http@{P3_VERSION} (for Rust, the `wasip3` crate 0.9.0+wasi-0.3.0), or \
             against wasi:http/proxy@0.2.x"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exporting(name: &str) -> Vec<u8> {
        wat::parse_str(format!(
            "(component (instance $i) (export \"{name}\" (instance $i)))"
        ))
        .unwrap()
    }

    #[test]
    fn tells_the_handler_interfaces_apart() {
        let p2 = exporting("wasi:http/incoming-handler@0.2.12");
        assert_eq!(of_component(&p2).unwrap(), HttpWorld::P2("0.2.12".into()));
        let p3 = exporting("wasi:http/handler@0.3.0");
        assert_eq!(of_component(&p3).unwrap(), HttpWorld::P3("0.3.0".into()));
        let neither = exporting("wasi:cli/run@0.2.0");
        assert_eq!(of_component(&neither).unwrap(), HttpWorld::None);
        assert!(check_p3_version(&of_component(&p2).unwrap()).is_ok());
        assert!(check_p3_version(&of_component(&p3).unwrap()).is_ok());
        let later = exporting("wasi:http/handler@0.3.2");
        let e = check_p3_version(&of_component(&later).unwrap()).unwrap_err();
        assert!(e.to_string().contains("wasi:http/handler@0.3.2"), "{e}");
        assert!(
            e.to_string().contains("implements wasi:http 0.3.0 only"),
            "{e}"
        );
    }

    #[test]
    fn exports_of_nested_components_do_not_count() {
        let nested = wat::parse_str(
            "(component (component (instance $i) (export \"wasi:http/handler@0.3.0\" (instance $i))))",
        )
        .unwrap();
        assert_eq!(of_component(&nested).unwrap(), HttpWorld::None);
    }
}
