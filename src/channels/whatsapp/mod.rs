//! WhatsApp Web: the pure event mapping and media handling (always built) and the live client
//! behind the `whatsapp` cargo feature (`claw whatsapp pair|run`).

#[cfg(feature = "whatsapp")]
pub mod client;
pub mod map;
pub mod media;
pub mod store;
