//! Molt's data plane. See `admin` for the protocol the server drives it with.
pub mod admin;
