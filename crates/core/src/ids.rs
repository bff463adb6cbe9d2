//! Opaque identifiers: a type prefix and a random base62 part.

use rand::distr::{Alphanumeric, SampleString};

/// Length of the random part of an id (base62, ~131 bits).
pub const ID_RANDOM_LEN: usize = 22;

/// A new id such as `org_3hT...`: `prefix` followed by 22 random base62
/// characters.
pub fn new_id(prefix: &str) -> String {
    let mut id = String::with_capacity(prefix.len() + ID_RANDOM_LEN);
    id.push_str(prefix);
    Alphanumeric.append_string(&mut rand::rng(), &mut id, ID_RANDOM_LEN);
    id
}

/// Whether `s` has the shape of an id with this prefix (cheap check done
/// before any lookup).
pub fn is_id(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix).is_some_and(|rest| {
        rest.len() == ID_RANDOM_LEN && rest.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_prefix_and_random_part() {
        let a = new_id("org_");
        let b = new_id("org_");
        assert!(is_id(&a, "org_"), "{a}");
        assert_ne!(a, b);
        assert!(!is_id(&a, "key_"));
        assert!(!is_id("org_short", "org_"));
        assert!(!is_id("org_aaaaaaaaaaaaaaaaaaaa-a", "org_"));
    }
}
