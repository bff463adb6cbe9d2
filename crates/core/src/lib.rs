//! latchkey's pure logic, with no I/O: identifiers, the API key format,
//! scopes, routes, and the catalog of refusal codes. Everything here is
//! deterministic apart from the randomness used to mint keys and ids.

pub mod code;
pub mod ids;
pub mod keyfmt;
pub mod route;
pub mod scope;

pub use code::Code;
