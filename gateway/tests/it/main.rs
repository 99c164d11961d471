//! The gateway crate's one integration-test binary: real sockets on 127.0.0.1, an in-process
//! node per test.

#[path = "../common/mod.rs"]
mod common;

mod abuse;
mod actions;
mod api;
mod archive;
mod archiving;
mod authz;
mod bounds;
mod chat;
mod conformance;
mod directory;
mod edge;
mod fuzz_corpus;
mod golden;
mod mail;
mod rules;
mod session;
mod sites;
mod staff;
mod supervision;
mod webhooks;
