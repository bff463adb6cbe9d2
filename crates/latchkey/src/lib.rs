//! latchkey: a self-hosted API authentication server.
//!
//! `app` holds the shared state, `service` what latchkey does,
//! `decision` the one engine that judges a presented credential, `http`
//! the server and `cli` the command line.

pub mod app;
pub mod cli;
pub mod client_jwt;
pub mod config;
pub mod console;
pub mod crypto;
pub mod decision;
pub mod error;
pub mod http;
pub mod jose;
pub mod limits;
pub mod logs;
pub mod oauth;
pub mod ratelimit;
pub mod service;
pub mod views;
