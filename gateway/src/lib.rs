//! chat-gateway: a horizontally scalable real-time WebSocket live-chat gateway.
//!
//! The crate is a library (everything testable) plus the `gateway` binary (`main.rs`). See
//! `ARCHITECTURE.md` at the repository root for the map.

pub mod abuse;
pub mod api;
pub mod archive;
pub mod auth;
pub mod bus;
pub mod clock;
pub mod config;
pub mod core;
pub mod directory;
pub mod engine;
#[doc(hidden)]
pub mod fuzz;
pub mod http;
pub mod hub;
pub mod i18n;
pub mod mail;
pub mod metrics;
pub mod outbound;
pub mod outbox;
pub mod protocol;
pub mod server;
pub mod service;
pub mod transcript;
pub mod webhook;
pub mod ws;
