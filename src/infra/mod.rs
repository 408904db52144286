//! Infrastructure every part stands on: the store, the container runtimes, the host proxy (the
//! containers' only way out), the one module that touches agent-writable trees, configuration,
//! paths, secrets, the CA, locks, errors, output and the host↔agent protocol. Nothing here
//! knows about the pipeline's order.

pub mod ca;
pub mod config;
pub mod error;
pub mod exe;
pub mod lock;
pub mod logging;
pub mod output;
pub mod paths;
pub mod protocol;
pub mod proxy;
pub mod runtime;
pub mod secrets;
pub mod store;
pub mod time;
pub mod untrusted;
