//! What a failed guest becomes, for both wasi:http versions.
//!
//! A fault ends its request alone:
//!
//! | fault                                             | status                 |
//! |---------------------------------------------------|------------------------|
//! | trap, panic, stack overflow                       | 500                    |
//! | memory limit hit (linear memories + host memory)  | 500                    |
//! | host's memory budget (--max-total-memory) used up | 503 with `Retry-After` |
//! | no free instance slot in the pooling allocator    | 503 with `Retry-After` |
//! | wall-clock limit hit                              | 504                    |
//! | returned without setting a response               | 500                    |
//! | request body over the limit                       | 413                    |
//! | request body slower than --min-body-rate          | 408                    |
//! | cancelled by its client (stream reset, hang-up)   | none: nobody reads it  |
//! | any of these after the response head was sent     | the body is cut        |
//!
//! Faults are logged once by a route version's [`Reporter`], naming the
//! route, the component digest, the request id and the cause, and counted
//! by kind; not a fault that followed the host's own refusal of the
//! request (413, 408, a client gone), which is the client's doing. [`answer`] is the one mapping from a failed request to the
//! host's response: a refused request body wins over the fault it caused.

use crate::base::digest::Digest;
use crate::observe::metrics::RouteMetrics;
use crate::run::body::{Flags, ResponseBody, host_response};
use crate::wasm::sandbox::MemoryLimit;
use http::{Response, StatusCode};
use std::sync::Arc;
use wasmtime::{PoolConcurrencyLimitError, Trap};

/// Why a request's guest failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// A trap: `unreachable` (Rust panics end here), stack overflow, ...
    Trap(String),
    /// The request's wall-clock limit passed.
    Timeout,
    /// The guest's memory could not start or grow within a limit.
    Memory(MemoryLimit),
    /// The guest returned without setting a response.
    NoResponse,
    /// The pooling allocator had no free slot (instance, memory, table or
    /// stack) for the guest's instance.
    Pool(String),
    /// The client cancelled the request ([`Flags::cancel`]): the guest was
    /// stopped like a timeout stops it. The client's doing (its flags say
    /// `client_gone`), so never counted.
    Cancelled,
}

impl Fault {
    /// The metric label of this kind of fault.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Trap(_) => "trap",
            Fault::Timeout => "timeout",
            Fault::Memory(MemoryLimit::Instance) => "memory",
            Fault::Memory(MemoryLimit::Host) => "memory_budget",
            Fault::NoResponse => "no_response",
            Fault::Pool(_) => "pool",
            Fault::Cancelled => "cancelled",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Fault::Timeout => StatusCode::GATEWAY_TIMEOUT,
            // Not the handler's doing: other requests hold the memory or
            // the pool's slots.
            Fault::Memory(MemoryLimit::Host) | Fault::Pool(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn cause(&self) -> String {
        match self {
            Fault::Trap(cause) => cause.clone(),
            Fault::Timeout => "exceeded its time limit".into(),
            Fault::Memory(MemoryLimit::Instance) => "exceeded its memory limit".into(),
            Fault::Memory(MemoryLimit::Host) => {
                "found the host's memory budget for guests (--max-total-memory) used up".into()
            }
            Fault::NoResponse => "returned without setting a response".into(),
            Fault::Pool(cause) => format!("found no free instance slot: {cause}"),
            Fault::Cancelled => "was cancelled by its client".into(),
        }
    }

    pub fn classify(error: &wasmtime::Error, memory_exceeded: Option<MemoryLimit>) -> Fault {
        if let Some(limit) = memory_exceeded {
            return Fault::Memory(limit);
        }
        if let Some(pool) = error
            .chain()
            .find_map(|e| e.downcast_ref::<PoolConcurrencyLimitError>())
        {
            return Fault::Pool(pool.to_string());
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => Fault::Timeout,
            Some(trap) => Fault::Trap(format!("trap: {trap}")),
            None => Fault::Trap(error.to_string()),
        }
    }
}

/// Where a route version's faults are logged and counted.
#[derive(Clone)]
pub struct Reporter {
    pub label: Arc<str>,
    pub digest: Digest,
    pub metrics: RouteMetrics,
}

impl Reporter {
    /// Logs `fault` of request `request_id`, and counts it, unless it
    /// followed the host's own refusal of the request (`flags`): a body
    /// past its limit (413) or too slow (408), or a client gone. A guest
    /// reading such a body fails through no fault of its own, so that is
    /// one info line naming the refusal, counted where refusals are
    /// (`wasmlet_requests_rejected_total`), never as a handler fault.
    pub fn report(&self, request_id: &str, fault: &Fault, flags: &Flags) {
        flags
            .trace
            .set(opentelemetry::KeyValue::new("wasmlet.fault", fault.kind()));
        let (trace_id, span_id) = flags.trace.log_fields();
        if let Some(refused) = flags.refused() {
            tracing::info!(
                route = %self.label,
                digest = %self.digest,
                request_id = %request_id,
                trace_id,
                span_id,
                refused = %refused,
                kind = %fault.kind(),
                "handler ended after the host refused its request"
            );
            return;
        }
        // A gRPC client's own deadline: the call ran as long as it was
        // allowed, and a client could otherwise raise the fault rate at will.
        if matches!(fault, Fault::Timeout) && flags.client_deadline() {
            tracing::info!(
                route = %self.label,
                digest = %self.digest,
                request_id = %request_id,
                trace_id,
                span_id,
                "handler ended at the client's deadline (grpc-timeout)"
            );
            return;
        }
        self.metrics.fault(fault.kind());
        tracing::error!(
            route = %self.label,
            digest = %self.digest,
            request_id = %request_id,
            trace_id,
            span_id,
            kind = %fault.kind(),
            cause = %fault.cause(),
            "handler fault"
        );
    }

    /// Logs that the guest answered with an error code instead of a
    /// response; the host answers [`handler_error`].
    pub fn error_code(&self, request_id: &str, code: &impl std::fmt::Debug, flags: &Flags) {
        flags
            .trace
            .set(opentelemetry::KeyValue::new("wasmlet.fault", "error_code"));
        let (trace_id, span_id) = flags.trace.log_fields();
        tracing::warn!(route = %self.label, digest = %self.digest, request_id = %request_id, trace_id, span_id, error_code = ?code, "handler answered with an error code");
    }
}

/// The host's answer to a request whose guest failed with `fault`: the
/// refusal when its request body was refused (the client's doing), else
/// the fault's status and text.
pub fn answer(flags: &Flags, fault: &Fault) -> Response<ResponseBody> {
    flags
        .refusal()
        .unwrap_or_else(|| host_response(fault.status(), &format!("{}\n", fault_text(fault))))
}

/// The host's answer when the guest answered with an error code.
pub fn handler_error() -> Response<ResponseBody> {
    host_response(StatusCode::INTERNAL_SERVER_ERROR, "handler error\n")
}

/// What the client reads when its request failed with `fault`.
pub fn fault_text(fault: &Fault) -> &'static str {
    match fault {
        Fault::Trap(_) => "handler trapped",
        Fault::Timeout => "handler timed out",
        Fault::Memory(MemoryLimit::Instance) => "handler exceeded its memory limit",
        Fault::Memory(MemoryLimit::Host) => "no memory left for handlers, try again",
        Fault::NoResponse => "handler did not respond",
        Fault::Pool(_) => "no instance slot free, try again",
        Fault::Cancelled => "request cancelled",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::Store;

    /// A request that finds no free slot in the pooling allocator gets 503
    /// (a passing shortage), not 500 as if its guest had trapped.
    #[test]
    fn an_exhausted_pool_is_a_503_not_a_trap() {
        let mut pool = wasmtime::PoolingAllocationConfig::default();
        pool.total_component_instances(1)
            .total_core_instances(1)
            .total_memories(1)
            .total_tables(1)
            .max_memory_size(1 << 16);
        let mut config = wasmtime::Config::new();
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        let engine = wasmtime::Engine::new(&config).unwrap();
        let wasm = wat::parse_str("(component)").unwrap();
        let component = wasmtime::component::Component::new(&engine, &wasm).unwrap();
        let linker = wasmtime::component::Linker::<()>::new(&engine);
        let mut first = Store::new(&engine, ());
        let _held = linker.instantiate(&mut first, &component).unwrap();
        let mut second = Store::new(&engine, ());
        let error = linker.instantiate(&mut second, &component).unwrap_err();
        let fault = Fault::classify(&error, None);
        assert_eq!(fault.status(), StatusCode::SERVICE_UNAVAILABLE, "{fault:?}");
        assert_eq!(fault.kind(), "pool");
    }
}
