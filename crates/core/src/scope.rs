//! Scopes (SPEC §3): RFC 6749 scope tokens, `*` and `resource.*`
//! wildcards, `implies` expansion, and validation against the catalog.

use std::collections::BTreeMap;

/// Longest scope token accepted.
pub const MAX_SCOPE_LEN: usize = 200;
/// Most scopes on one credential.
pub const MAX_SCOPES: usize = 256;
/// Deepest `implies` chain followed.
const MAX_IMPLY_DEPTH: usize = 8;

/// The API's scope rules, built once from config.
#[derive(Debug, Clone)]
pub struct ScopePolicy {
    separator: char,
    catalog: BTreeMap<String, String>,
    implies: BTreeMap<String, Vec<String>>,
}

impl Default for ScopePolicy {
    fn default() -> Self {
        Self::new('.', BTreeMap::new(), BTreeMap::new())
    }
}

/// Whether `s` is an RFC 6749 scope-token: `%x21 / %x23-5B / %x5D-7E`.
pub fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_SCOPE_LEN
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

/// Whether a granted scope is a wildcard (`*` or ends in `{sep}*`).
pub fn is_wildcard(s: &str) -> bool {
    s.ends_with('*')
}

impl ScopePolicy {
    pub fn new(
        separator: char,
        catalog: BTreeMap<String, String>,
        implies: BTreeMap<String, Vec<String>>,
    ) -> Self {
        Self {
            separator,
            catalog,
            implies,
        }
    }

    pub fn catalog(&self) -> &BTreeMap<String, String> {
        &self.catalog
    }

    pub fn separator(&self) -> char {
        self.separator
    }

    /// A granted scope and everything `implies` adds to it, transitively.
    pub fn expand(&self, granted: &[String]) -> Vec<String> {
        let mut out: Vec<String> = granted.to_vec();
        let mut frontier: Vec<String> = granted.to_vec();
        for _ in 0..MAX_IMPLY_DEPTH {
            let mut next = Vec::new();
            for g in &frontier {
                if let Some(more) = self.implies.get(g) {
                    for m in more {
                        if !out.contains(m) {
                            out.push(m.clone());
                            next.push(m.clone());
                        }
                    }
                }
            }
            if next.is_empty() {
                break;
            }
            frontier = next;
        }
        out
    }

    /// Whether one (already expanded) grant covers `required`.
    pub fn grant_matches(&self, grant: &str, required: &str) -> bool {
        if grant == "*" || grant == required {
            return true;
        }
        match grant.strip_suffix('*') {
            // `documents.*` covers `documents.read` and `documents.x.y`,
            // never `documents` itself.
            Some(stem) if stem.ends_with(self.separator) => {
                required.len() > stem.len() && required.starts_with(stem)
            }
            _ => false,
        }
    }

    /// The required scopes that the granted ones (expanded here) do not cover.
    pub fn missing(&self, granted: &[String], required: &[String]) -> Vec<String> {
        let expanded = self.expand(granted);
        required
            .iter()
            .filter(|r| !expanded.iter().any(|g| self.grant_matches(g, r)))
            .cloned()
            .collect()
    }

    /// Checks scopes about to be granted. Answers `(index, message)` for
    /// each bad one: not a scope token, a wildcard in the wrong place, a
    /// scope (or a wildcard matching nothing) outside a non-empty catalog,
    /// or a wildcard when `explicit_only` (the restricted kind).
    pub fn validate_grant(&self, scopes: &[String], explicit_only: bool) -> Vec<(usize, String)> {
        let mut errors = Vec::new();
        if scopes.len() > MAX_SCOPES {
            errors.push((
                MAX_SCOPES,
                format!("At most {MAX_SCOPES} scopes may be granted."),
            ));
            return errors;
        }
        for (i, s) in scopes.iter().enumerate() {
            if !is_scope_token(s) {
                errors.push((
                    i,
                    format!("Not a valid scope: scopes are 1 to {MAX_SCOPE_LEN} printable ASCII characters without spaces, quotes or backslashes."),
                ));
                continue;
            }
            if let Some(pos) = s.find('*') {
                let stem_ok = s == "*"
                    || (pos == s.len() - 1
                        && pos > 1
                        && s.get(..pos)
                            .is_some_and(|stem| stem.ends_with(self.separator)));
                if !stem_ok {
                    errors.push((
                        i,
                        format!(
                            "A wildcard must be `*` or end a scope as `resource{}*`.",
                            self.separator
                        ),
                    ));
                    continue;
                }
            }
            if explicit_only
                && self
                    .expand(std::slice::from_ref(s))
                    .iter()
                    .any(|g| is_wildcard(g))
            {
                errors.push((
                    i,
                    "This key kind requires explicit scopes: wildcards are not allowed.".to_owned(),
                ));
                continue;
            }
            if self.catalog.is_empty() || self.implies.contains_key(s) {
                continue;
            }
            let known = if is_wildcard(s) {
                s == "*" || self.catalog.keys().any(|c| self.grant_matches(s, c))
            } else {
                self.catalog.contains_key(s)
            };
            if !known {
                errors.push((i, format!("`{s}` is not in the scope catalog.")));
            }
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> ScopePolicy {
        let catalog = [
            ("documents.read", "List and retrieve documents"),
            ("documents.write", "Update documents"),
            ("documents.delete", "Delete documents"),
            ("templates.read", "Read templates"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect();
        let implies = [
            ("admin".to_owned(), vec!["*".to_owned()]),
            (
                "editor".to_owned(),
                vec!["documents.*".to_owned(), "viewer".to_owned()],
            ),
            ("viewer".to_owned(), vec!["templates.read".to_owned()]),
        ]
        .into_iter()
        .collect();
        ScopePolicy::new('.', catalog, implies)
    }

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn wildcards_match_per_spec() {
        let p = policy();
        assert!(p.grant_matches("*", "anything"));
        assert!(p.grant_matches("documents.*", "documents.read"));
        assert!(p.grant_matches("documents.*", "documents.x.y"));
        assert!(!p.grant_matches("documents.*", "documents"));
        assert!(!p.grant_matches("documents.*", "documentsX.read"));
        assert!(!p.grant_matches("documents.read", "documents.write"));
        assert!(!p.grant_matches("doc*", "documents.read"));
    }

    #[test]
    fn implies_expands_transitively() {
        let p = policy();
        assert!(
            p.missing(&v(&["editor"]), &v(&["documents.delete", "templates.read"]))
                .is_empty()
        );
        assert_eq!(
            p.missing(&v(&["viewer"]), &v(&["documents.read"])),
            v(&["documents.read"])
        );
        assert!(p.missing(&v(&["admin"]), &v(&["x.y"])).is_empty());
    }

    #[test]
    fn catalog_validation() {
        let p = policy();
        assert!(
            p.validate_grant(&v(&["documents.read", "documents.*", "*", "admin"]), false)
                .is_empty()
        );
        let errs = p.validate_grant(
            &v(&["documents.read", "nope", "billing.*", "a b", "do*cs"]),
            false,
        );
        assert_eq!(
            errs.iter().map(|e| e.0).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
        // Restricted kind: no wildcards, not even through implies.
        let errs = p.validate_grant(&v(&["documents.read", "documents.*", "admin"]), true);
        assert_eq!(errs.iter().map(|e| e.0).collect::<Vec<_>>(), vec![1, 2]);
        // Empty catalog: any well-formed scope.
        let open = ScopePolicy::default();
        assert!(
            open.validate_grant(&v(&["whatever:thing", "x.*"]), false)
                .is_empty()
        );
        assert_eq!(
            open.validate_grant(&vec!["a".to_owned(); MAX_SCOPES + 1], false)
                .len(),
            1
        );
    }

    #[test]
    fn scope_tokens() {
        assert!(is_scope_token("documents.read"));
        assert!(is_scope_token("a:b"));
        assert!(!is_scope_token(""));
        assert!(!is_scope_token("a b"));
        assert!(!is_scope_token("a\"b"));
        assert!(!is_scope_token("é"));
        assert!(!is_scope_token(&"a".repeat(MAX_SCOPE_LEN + 1)));
    }
}
