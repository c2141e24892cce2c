//! Which wasi:http handler interface a component exports, read from its
//! binary before wasmtime compiles it.
//!
//! wasmlet serves `wasi:http/incoming-handler@0.2.x` (the `wasi:http/proxy`
//! world, WASIp2). A WASIp3 handler exports `wasi:http/handler@0.3.x`
//! instead and needs the component-model-async features, which this host's
//! engine does not enable: compiling it would fail with a message about a
//! wasm feature. It is refused here, before compiling, with a line that
//! says what it is and what serves it.

use anyhow::{Context, Result, bail};
use wasmparser::{Parser, Payload};

/// The p2 handler interface, without its version.
pub const P2_HANDLER: &str = "wasi:http/incoming-handler@";
/// The p3 handler interface, without its version.
pub const P3_HANDLER: &str = "wasi:http/handler@";

/// The handler interfaces among a component's top-level exports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpWorld {
    /// `wasi:http/incoming-handler@VERSION` (WASIp2): served.
    P2(String),
    /// `wasi:http/handler@VERSION` (WASIp3) and no p2 handler: refused.
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

/// Refuses a WASIp3 handler with a line saying what it is and what
/// serves it; anything else is left to the checks after compiling.
pub fn refuse_p3(world: &HttpWorld) -> Result<()> {
    if let HttpWorld::P3(version) = world {
        bail!(
            "exports `{P3_HANDLER}{version}`, a wasi:http 0.3 (WASIp3) handler, which this host \
             does not serve: build it against wasi:http/proxy@0.2.x (incoming-handler), or serve it \
             with `wasmtime serve -Sp3` (wasmtime 48 implements wasi:http@0.3.0 only; guests \
             built for 0.3.1 or later will not link there either)"
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
        assert!(refuse_p3(&of_component(&p2).unwrap()).is_ok());
        let e = refuse_p3(&of_component(&p3).unwrap()).unwrap_err();
        assert!(e.to_string().contains("wasi:http/handler@0.3.0"), "{e}");
        assert!(e.to_string().contains("wasmtime serve -Sp3"), "{e}");
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
