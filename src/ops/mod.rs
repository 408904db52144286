//! Operating an install: creating a home (`init`), building the agent image, installing the
//! timers (`service`), checking everything (`doctor`) and reporting (`status`, `problems`).

pub mod doctor;
pub mod image;
pub mod init;
pub mod problems;
pub mod service;
pub mod status;
