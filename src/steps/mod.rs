//! The pipeline: the small commands OS timers chain around the SQLite file, in the order data
//! flows — ingest → dispatch → run_group → ipc → deliver — plus the scheduler that queues task
//! runs, the chain that starts the next step at once, the tick that does a whole round, and the
//! watchdog and housekeeping that keep a round safe to interrupt.

pub mod chain;
pub mod deliver;
pub mod dispatch;
pub mod housekeeping;
pub mod ingest;
pub mod ipc;
pub mod run_group;
pub mod schedule;
pub mod tick;
pub mod wake;
pub mod watchdog;
