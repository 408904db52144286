//! Domain rules: who a group is and what it may do (groups, limits, approvals, mounts,
//! credentials, budgets), what a task is, which messages make a prompt, and what main is told.
//! Pipeline steps ask these modules; these never start a step themselves.

pub mod approvals;
pub mod cost;
pub mod credentials;
pub mod groups;
pub mod limits;
pub mod mounts;
pub mod notice;
pub mod pending;
pub mod prompt;
pub mod snapshot;
pub mod tasks;
