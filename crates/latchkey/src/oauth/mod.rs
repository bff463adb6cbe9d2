//! The OAuth 2.0 authorization server (SPEC §8): clients and users
//! (`manage`), passwords, signing keys, the token endpoint, authorization.

pub mod authorize;
pub mod keys;
pub mod manage;
pub mod password;
pub mod token;
