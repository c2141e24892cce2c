//! What one instance of a component needs from the host, read from its
//! binary before wasmtime compiles it: core instances, memories and tables
//! (those it defines, counted once per instantiation), their initial sizes,
//! and the largest table.
//!
//! The pooling allocator is sized once for the whole process, so a
//! component over its per-component limits is refused with a line naming
//! the limit and the flag that raises it, and `wasmlet check` prints these
//! numbers for the user to size the host by.

use anyhow::{Context, Result, bail};
use wasmparser::{
    ComponentAlias, ComponentExternalKind, ComponentImport, ComponentInstance,
    ComponentOuterAliasKind, ComponentTypeRef, Instance, Parser, Payload,
};

/// A core module's own memories and tables (imported ones belong to
/// whichever instance defines them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Footprint {
    /// Core module instances created by one instantiation.
    pub core_instances: u32,
    /// Linear memories defined by those instances.
    pub memories: u32,
    /// Tables defined by those instances.
    pub tables: u32,
    /// Bytes all those memories start with.
    pub initial_memory: u64,
    /// Bytes all those memories may grow to, if every one declares a maximum.
    pub max_memory: Option<u64>,
    /// Elements of the largest table, initially.
    pub largest_table: u64,
}

impl Footprint {
    fn add(&mut self, other: &Footprint) {
        self.core_instances = self.core_instances.saturating_add(other.core_instances);
        self.memories = self.memories.saturating_add(other.memories);
        self.tables = self.tables.saturating_add(other.tables);
        self.initial_memory = self.initial_memory.saturating_add(other.initial_memory);
        self.max_memory = match (self.max_memory, other.max_memory) {
            (Some(a), Some(b)) => Some(a.saturating_add(b)),
            _ => None,
        };
        self.largest_table = self.largest_table.max(other.largest_table);
    }

    fn empty() -> Footprint {
        Footprint {
            max_memory: Some(0),
            ..Footprint::default()
        }
    }
}

/// One component or core module being read; nested ones are read inline.
struct Frame {
    is_module: bool,
    /// The core module index space: what instantiating each one costs.
    modules: Vec<Footprint>,
    /// The component index space, likewise.
    components: Vec<Footprint>,
    /// What this frame costs when instantiated.
    total: Footprint,
}

impl Frame {
    fn new(is_module: bool) -> Frame {
        Frame {
            is_module,
            modules: Vec::new(),
            components: Vec::new(),
            total: Footprint::empty(),
        }
    }
}

/// Reads what instantiating the component in `wasm` once needs.
pub fn of_component(wasm: &[u8]) -> Result<Footprint> {
    let mut stack: Vec<Frame> = Vec::new();
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.context("malformed WebAssembly")?;
        match payload {
            Payload::Version { encoding, .. } if stack.is_empty() => {
                if encoding != wasmparser::Encoding::Component {
                    bail!("a core module, not a component");
                }
                stack.push(Frame::new(false));
            }
            Payload::ModuleSection { .. } => stack.push(Frame::new(true)),
            Payload::ComponentSection { .. } => stack.push(Frame::new(false)),
            Payload::End(_) => {
                let frame = stack.pop().context("unbalanced sections")?;
                let Some(parent) = stack.last_mut() else {
                    return Ok(frame.total);
                };
                if frame.is_module {
                    parent.modules.push(frame.total);
                } else {
                    parent.components.push(frame.total);
                }
            }
            other => {
                let (frame, outer) = stack
                    .split_last_mut()
                    .context("section outside a component")?;
                read_section(frame, outer, other)?;
            }
        }
    }
    bail!("truncated component")
}

/// Adds one section's cost to `frame`; `outer` are the enclosing frames,
/// outermost first, for outer aliases.
fn read_section(frame: &mut Frame, outer: &[Frame], payload: Payload<'_>) -> Result<()> {
    match payload {
        Payload::MemorySection(reader) if frame.is_module => {
            for memory in reader {
                let memory = memory?;
                let page = 1u64 << memory.page_size_log2.unwrap_or(16);
                frame.total.memories += 1;
                frame.total.initial_memory = frame
                    .total
                    .initial_memory
                    .saturating_add(memory.initial.saturating_mul(page));
                frame.total.max_memory = match (frame.total.max_memory, memory.maximum) {
                    (Some(sum), Some(max)) => Some(sum.saturating_add(max.saturating_mul(page))),
                    _ => None,
                };
            }
        }
        Payload::TableSection(reader) if frame.is_module => {
            for table in reader {
                let table = table?;
                frame.total.tables += 1;
                frame.total.largest_table = frame.total.largest_table.max(table.ty.initial);
            }
        }
        Payload::InstanceSection(reader) => {
            for instance in reader {
                if let Instance::Instantiate { module_index, .. } = instance? {
                    let module = frame.modules.get(module_index as usize).cloned();
                    let mut cost = module.unwrap_or_else(Footprint::empty);
                    cost.core_instances = 1;
                    frame.total.add(&cost);
                }
            }
        }
        Payload::ComponentInstanceSection(reader) => {
            for instance in reader {
                if let ComponentInstance::Instantiate {
                    component_index, ..
                } = instance?
                {
                    let component = frame.components.get(component_index as usize).cloned();
                    frame.total.add(&component.unwrap_or_else(Footprint::empty));
                }
            }
        }
        Payload::ComponentAliasSection(reader) => {
            for alias in reader {
                match alias? {
                    ComponentAlias::Outer { kind, count, index } => {
                        // `count` 1 is the parent, the last of `outer`.
                        let target = (count as usize)
                            .checked_sub(1)
                            .and_then(|up| outer.len().checked_sub(up + 1))
                            .and_then(|i| outer.get(i));
                        let pick = |space: Option<&Vec<Footprint>>| {
                            space
                                .and_then(|s| s.get(index as usize).cloned())
                                .unwrap_or_else(Footprint::empty)
                        };
                        match kind {
                            ComponentOuterAliasKind::CoreModule => {
                                frame.modules.push(pick(target.map(|f| &f.modules)));
                            }
                            ComponentOuterAliasKind::Component => {
                                frame.components.push(pick(target.map(|f| &f.components)));
                            }
                            _ => {}
                        }
                    }
                    ComponentAlias::InstanceExport { kind, .. } => match kind {
                        ComponentExternalKind::Module => frame.modules.push(Footprint::empty()),
                        ComponentExternalKind::Component => {
                            frame.components.push(Footprint::empty());
                        }
                        _ => {}
                    },
                    ComponentAlias::CoreInstanceExport { .. } => {}
                }
            }
        }
        Payload::ComponentImportSection(reader) => {
            for import in reader {
                let ComponentImport { ty, .. } = import?;
                match ty {
                    ComponentTypeRef::Module(_) => frame.modules.push(Footprint::empty()),
                    ComponentTypeRef::Component(_) => frame.components.push(Footprint::empty()),
                    _ => {}
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// "1.5 MiB"-style sizes for people.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["bytes", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn component(wat: &str) -> Vec<u8> {
        wat::parse_str(wat).expect("valid WAT")
    }

    #[test]
    fn counts_each_instantiation_of_a_module() {
        let wasm = component(
            r#"(component
                (core module $m (memory 2 10) (table 5 funcref))
                (core module $n (memory 1))
                (core instance (instantiate $m))
                (core instance (instantiate $m))
                (core instance (instantiate $n))
            )"#,
        );
        let footprint = of_component(&wasm).unwrap();
        assert_eq!(footprint.core_instances, 3);
        assert_eq!(footprint.memories, 3);
        assert_eq!(footprint.tables, 2);
        assert_eq!(footprint.initial_memory, 5 * 65536);
        assert_eq!(footprint.max_memory, None, "$n has no maximum");
        assert_eq!(footprint.largest_table, 5);
    }

    #[test]
    fn counts_nested_components_and_outer_aliases() {
        let wasm = component(
            r#"(component
                (core module $m (memory 1 1))
                (component $inner
                    (alias outer 1 $m (core module $outer))
                    (core instance (instantiate $outer))
                    (core instance (instantiate $outer))
                )
                (instance (instantiate $inner))
                (instance (instantiate $inner))
                (core instance (instantiate $m))
            )"#,
        );
        let footprint = of_component(&wasm).unwrap();
        assert_eq!(footprint.core_instances, 5);
        assert_eq!(footprint.memories, 5);
        assert_eq!(footprint.max_memory, Some(5 * 65536));
    }

    #[test]
    fn a_module_defined_but_never_instantiated_costs_nothing() {
        let wasm = component(r#"(component (core module (memory 100)))"#);
        assert_eq!(
            of_component(&wasm).unwrap(),
            Footprint {
                max_memory: Some(0),
                ..Footprint::default()
            }
        );
    }

    #[test]
    fn refuses_a_core_module_and_garbage() {
        let module = wat::parse_str("(module)").unwrap();
        assert!(of_component(&module).is_err());
        assert!(of_component(b"\0asm\x0d\0\x01\0garbage").is_err());
        assert!(of_component(b"").is_err());
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(512), "512 bytes");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }
}
