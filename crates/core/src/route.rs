//! Routes (`[[routes]]` in config): which checks apply to a request for the
//! API latchkey stands in front of.
//!
//! A request-target is read once, by [`NormalizedPath::parse`], and whatever
//! servers read differently (encoded slashes, backslashes, `;` parameters,
//! bad percent-encoding, `..` above the root) is refused rather than guessed
//! at: a guess that differs from the upstream's would let a request reach one
//! route with another route's checks.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest request-target accepted, in bytes.
pub const MAX_TARGET_LEN: usize = 8192;

/// One `[[routes]]` entry, as written in config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// Empty (or containing `*`) means any method.
    #[serde(default)]
    pub methods: Vec<String>,
    pub path: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub public: bool,
}

/// Why a `[[routes]]` entry is refused. The caller adds which entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    NotAbsolute,
    EmptySegment,
    DotSegment,
    InvalidLiteral(String),
    InvalidParam(String),
    DuplicateParam(String),
    WildcardNotLast,
    InvalidMethod(String),
    PublicWithScopes,
    /// Same pattern shape and an overlapping method as `routes[other]`.
    Duplicate {
        other: usize,
    },
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAbsolute => f.write_str("The path must start with `/`."),
            Self::EmptySegment => f.write_str("The path has an empty segment (`//`)."),
            Self::DotSegment => f.write_str("The path has a `.` or `..` segment."),
            Self::InvalidLiteral(s) => write!(
                f,
                "The segment `{s}` may hold only letters, digits and -._~!$&'()+,=:@ written unencoded (no %, ?, #, ;, braces or `*`), and may not end in `.`."
            ),
            Self::InvalidParam(s) => write!(
                f,
                "The segment `{s}` is not a parameter: write `{{name}}` as a whole segment, the name made of letters, digits and `_`."
            ),
            Self::DuplicateParam(n) => write!(f, "The parameter `{n}` appears twice."),
            Self::WildcardNotLast => f.write_str("`*` may only be the last segment."),
            Self::InvalidMethod(m) => write!(
                f,
                "`{m}` is not a method: use letters only, or `*` for any method."
            ),
            Self::PublicWithScopes => f.write_str("A public route cannot require scopes."),
            Self::Duplicate { other } => write!(
                f,
                "Same path and method as routes[{other}]: one of the two would never apply."
            ),
        }
    }
}

impl std::error::Error for RouteError {}

/// Why a request-target is refused (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    Empty,
    NotOriginForm,
    TooLong,
    InvalidByte,
    Fragment,
    Backslash,
    Semicolon,
    BadEncoding,
    EncodedSlash,
    EncodedBackslash,
    EncodedSemicolon,
    EncodedControl,
    NotUtf8,
    AsciiLookalike,
    TrailingDotOrSpace,
    DotSegment,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Empty => "The request-target is empty.",
            Self::NotOriginForm => "The request-target must be a path starting with `/`.",
            Self::TooLong => "The request-target is longer than 8192 bytes.",
            Self::InvalidByte => {
                "The request-target contains a space, a control character or a non-ASCII byte."
            }
            Self::Fragment => "The request-target contains `#`, which clients never send.",
            Self::Backslash => "The path contains a backslash, which some servers read as `/`.",
            Self::Semicolon => {
                "The path contains `;`, which some servers read as the start of path parameters."
            }
            Self::BadEncoding => "The path contains a `%` that is not followed by two hex digits.",
            Self::EncodedSlash => {
                "The path contains an encoded slash (%2F), which servers read differently."
            }
            Self::EncodedBackslash => {
                "The path contains an encoded backslash (%5C), which servers read differently."
            }
            Self::EncodedSemicolon => {
                "The path contains an encoded `;` (%3B), which servers read differently."
            }
            Self::EncodedControl => {
                "The path contains an encoded control character (such as %00 or %0A)."
            }
            Self::NotUtf8 => "The path's percent-encoded bytes are not valid UTF-8.",
            Self::AsciiLookalike => {
                "The path contains a character that some servers fold to ASCII (such as `ſ`, the Kelvin sign or fullwidth letters)."
            }
            Self::TrailingDotOrSpace => {
                "A path segment ends in `.` or a space, which some servers (on Windows) strip."
            }
            Self::DotSegment => "The path has a `.` or `..` segment (maybe percent-encoded); clients remove them before sending, and servers disagree on what they mean.",
        })
    }
}

impl std::error::Error for PathError {}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Segment {
    /// As the client encoded it: forwarded untouched.
    raw: String,
    /// Percent-decoded once: matched.
    decoded: String,
}

/// A request path read the one way latchkey accepts: no dot segments,
/// empty segments dropped, each segment decoded exactly once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedPath {
    segments: Vec<Segment>,
    trailing_slash: bool,
    query: Option<String>,
}

impl NormalizedPath {
    /// Parses a raw origin-form request-target (`/path?query`), such as
    /// nginx's `$request_uri`.
    pub fn parse(raw_target: &str) -> Result<Self, PathError> {
        if raw_target.is_empty() {
            return Err(PathError::Empty);
        }
        if raw_target.len() > MAX_TARGET_LEN {
            return Err(PathError::TooLong);
        }
        if !raw_target.starts_with('/') {
            return Err(PathError::NotOriginForm);
        }
        if raw_target.bytes().any(|b| !(0x21..=0x7E).contains(&b)) {
            return Err(PathError::InvalidByte);
        }
        if raw_target.contains('#') {
            return Err(PathError::Fragment);
        }
        let (path, query) = match raw_target.split_once('?') {
            Some((path, query)) => (path, Some(query.to_owned())),
            None => (raw_target, None),
        };
        if path.contains('\\') {
            return Err(PathError::Backslash);
        }
        if path.contains(';') {
            return Err(PathError::Semicolon);
        }
        let mut segments: Vec<Segment> = Vec::new();
        let mut trailing_slash = false;
        for raw in path.split('/').skip(1) {
            trailing_slash = true;
            if raw.is_empty() {
                continue;
            }
            let decoded = decode_segment(raw)?;
            match decoded.as_str() {
                // Resolving them would match one path while an upstream that
                // reads the raw `$request_uri` (or does not decode `%2e`)
                // serves another: refused, never resolved.
                "." | ".." => return Err(PathError::DotSegment),
                // Windows strips these, so `documents.` would reach `documents`.
                d if d.ends_with(['.', ' ']) => return Err(PathError::TrailingDotOrSpace),
                _ => {
                    segments.push(Segment {
                        raw: raw.to_owned(),
                        decoded,
                    });
                    trailing_slash = false;
                }
            }
        }
        Ok(Self {
            segments,
            trailing_slash,
            query,
        })
    }

    /// Decoded segments (for matching).
    pub fn segments(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.segments.iter().map(|s| s.decoded.as_str())
    }

    /// The path to forward to the upstream: empty segments removed, each
    /// remaining segment exactly as the client encoded it, trailing slash
    /// kept if the client sent one. `/a//b/c/` gives `/a/b/c/`.
    pub fn forward_path(&self) -> String {
        let mut out = String::new();
        for s in &self.segments {
            out.push('/');
            out.push_str(&s.raw);
        }
        if out.is_empty() || self.trailing_slash {
            out.push('/');
        }
        out
    }

    /// The raw query (without `?`), if any, untouched.
    pub fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }
}

/// Decodes `%XX` once, strictly; `%2F`, `%5C`, `%3B` and control
/// characters are refused since servers disagree on what they mean.
fn decode_segment(raw: &str) -> Result<String, PathError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.bytes();
    while let Some(b) = bytes.next() {
        if b != b'%' {
            out.push(b);
            continue;
        }
        let hi = bytes.next().and_then(hex);
        let lo = bytes.next().and_then(hex);
        let (Some(hi), Some(lo)) = (hi, lo) else {
            return Err(PathError::BadEncoding);
        };
        match (hi << 4) | lo {
            b'/' => return Err(PathError::EncodedSlash),
            b'\\' => return Err(PathError::EncodedBackslash),
            b';' => return Err(PathError::EncodedSemicolon),
            0..=0x1F | 0x7F => return Err(PathError::EncodedControl),
            d => out.push(d),
        }
    }
    let s = String::from_utf8(out).map_err(|_| PathError::NotUtf8)?;
    if s.chars().any(char::is_control) {
        return Err(PathError::EncodedControl);
    }
    if s.chars().any(folds_to_ascii) {
        return Err(PathError::AsciiLookalike);
    }
    Ok(s)
}

fn hex(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// Whether a non-ASCII character is one that case-insensitive servers may
/// take for an ASCII one (`ſ` for `s`, the Kelvin sign for `k`, `ı` for
/// `i`), or a fullwidth form that NFKC turns into ASCII. Such a character
/// would let `/documents` be spelled so that latchkey's literals miss it.
fn folds_to_ascii(c: char) -> bool {
    let single_ascii = |m: &mut dyn Iterator<Item = char>| m.filter(char::is_ascii).count() == 1;
    !c.is_ascii()
        && (single_ascii(&mut c.to_lowercase())
            || single_ascii(&mut c.to_uppercase())
            || ('\u{FF01}'..='\u{FF5E}').contains(&c))
}

#[derive(Debug, Clone)]
enum PatternSegment {
    /// As written (for the case-sensitive reading) and lower-cased.
    Literal {
        text: String,
        lower: String,
    },
    Param(String),
}

#[derive(Debug, Clone)]
struct Compiled {
    index: usize,
    /// Upper-cased; `None` is any method.
    methods: Option<Vec<String>>,
    segments: Vec<PatternSegment>,
    /// Ends in `*`.
    wildcard: bool,
    /// Specificity, compared lexicographically: 3 per literal, 2 per
    /// parameter, then 1 if the pattern ends there or 0 for `*`. Of two
    /// patterns matching one path, the greater is the more specific.
    rank: Vec<u8>,
}

impl Compiled {
    fn new(index: usize, spec: &RouteSpec) -> Result<Self, RouteError> {
        if spec.public && !spec.scopes.is_empty() {
            return Err(RouteError::PublicWithScopes);
        }
        let methods = compile_methods(&spec.methods)?;
        let (segments, wildcard) = compile_path(&spec.path)?;
        let mut rank: Vec<u8> = segments
            .iter()
            .map(|s| match s {
                PatternSegment::Literal { .. } => 3,
                PatternSegment::Param(_) => 2,
            })
            .collect();
        rank.push(if wildcard { 0 } else { 1 });
        Ok(Self {
            index,
            methods,
            segments,
            wildcard,
            rank,
        })
    }

    fn same_shape(&self, other: &Self) -> bool {
        self.wildcard == other.wildcard
            && self.segments.len() == other.segments.len()
            && self
                .segments
                .iter()
                .zip(&other.segments)
                .all(|pair| match pair {
                    (
                        PatternSegment::Literal { lower: a, .. },
                        PatternSegment::Literal { lower: b, .. },
                    ) => a == b,
                    (PatternSegment::Param(_), PatternSegment::Param(_)) => true,
                    _ => false,
                })
    }

    /// "Any" overlaps only "any": an explicit method may refine it.
    fn methods_overlap(&self, other: &Self) -> bool {
        match (&self.methods, &other.methods) {
            (None, None) => true,
            (Some(a), Some(b)) => a.iter().any(|m| b.contains(m)),
            _ => false,
        }
    }

    fn matches(&self, segments: &[Segment], reading: Reading) -> bool {
        let len_ok = if self.wildcard {
            segments.len() >= self.segments.len()
        } else {
            segments.len() == self.segments.len()
        };
        len_ok
            && self.segments.iter().zip(segments).all(|(p, s)| {
                let seg = if reading.raw { &s.raw } else { &s.decoded };
                match p {
                    PatternSegment::Literal { text, .. } if reading.exact_case => seg == text,
                    PatternSegment::Literal { lower, .. } => seg.eq_ignore_ascii_case(lower),
                    PatternSegment::Param(_) => true,
                }
            })
    }
}

/// How a server may compare a request segment with a literal: decoded or
/// as sent (Express matches the raw path), ignoring case or not.
#[derive(Debug, Clone, Copy)]
struct Reading {
    raw: bool,
    exact_case: bool,
}

/// latchkey's own reading: decoded, ignoring case.
const LATCHKEY_READING: Reading = Reading {
    raw: false,
    exact_case: false,
};

/// The readings an upstream may use instead.
const OTHER_READINGS: [Reading; 3] = [
    Reading {
        raw: false,
        exact_case: true,
    },
    Reading {
        raw: true,
        exact_case: false,
    },
    Reading {
        raw: true,
        exact_case: true,
    },
];

fn compile_methods(methods: &[String]) -> Result<Option<Vec<String>>, RouteError> {
    let mut any = methods.is_empty();
    let mut out: Vec<String> = Vec::new();
    for m in methods {
        if m == "*" {
            any = true;
        } else if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(RouteError::InvalidMethod(m.clone()));
        } else {
            let m = m.to_ascii_uppercase();
            if !out.contains(&m) {
                out.push(m);
            }
        }
    }
    Ok(if any { None } else { Some(out) })
}

fn compile_path(path: &str) -> Result<(Vec<PatternSegment>, bool), RouteError> {
    let rest = path.strip_prefix('/').ok_or(RouteError::NotAbsolute)?;
    let mut segments = Vec::new();
    let mut wildcard = false;
    if rest.is_empty() {
        return Ok((segments, wildcard));
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let mut names: Vec<&str> = Vec::new();
    for part in rest.split('/') {
        if wildcard {
            return Err(RouteError::WildcardNotLast);
        }
        match part {
            "" => return Err(RouteError::EmptySegment),
            "." | ".." => return Err(RouteError::DotSegment),
            "*" => wildcard = true,
            p if p.starts_with('{') || p.ends_with('}') => {
                let name = p
                    .strip_prefix('{')
                    .and_then(|p| p.strip_suffix('}'))
                    .filter(|n| {
                        !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    })
                    .ok_or_else(|| RouteError::InvalidParam(p.to_owned()))?;
                if names.contains(&name) {
                    return Err(RouteError::DuplicateParam(name.to_owned()));
                }
                names.push(name);
                segments.push(PatternSegment::Param(name.to_owned()));
            }
            p => {
                // A literal ending in `.` could never match: such request
                // segments are refused.
                if p.ends_with('.') || !p.bytes().all(is_literal_byte) {
                    return Err(RouteError::InvalidLiteral(p.to_owned()));
                }
                segments.push(PatternSegment::Literal {
                    text: p.to_owned(),
                    lower: p.to_ascii_lowercase(),
                });
            }
        }
    }
    Ok((segments, wildcard))
}

/// RFC 3986 `pchar` without `%` (literals are written unencoded), `;` (refused
/// in requests) and `*` (the wildcard).
fn is_literal_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()+,=:@".contains(&b)
}

/// Every `[[routes]]` entry, compiled.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    specs: Vec<RouteSpec>,
    compiled: Vec<Compiled>,
}

/// The route that applies to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup<'a> {
    Found(Matched<'a>),
    /// Some route matches the path, but none lists this method: the caller
    /// answers 405 with `Allow` from `allowed` (deduplicated, sorted).
    MethodNotAllowed {
        allowed: Vec<String>,
    },
    NotFound,
    /// latchkey's reading of the path finds route `index`, but a stricter
    /// reading (case-sensitive, or without percent-decoding) finds another:
    /// `other`, or `None` when that pattern has no route for the method. An
    /// upstream may read it either way, so the caller refuses it (400).
    Ambiguous {
        index: usize,
        other: Option<usize>,
    },
}

/// A route found for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched<'a> {
    /// Position in `[[routes]]`.
    pub index: usize,
    pub route: &'a RouteSpec,
    /// `{param}` names and their decoded values, in original case.
    pub params: Vec<(String, String)>,
}

enum Choice {
    None,
    Methods(Vec<String>),
    Route(usize),
}

impl RouteTable {
    /// Validates and compiles every pattern. Err carries the index of the
    /// bad entry.
    pub fn new(specs: Vec<RouteSpec>) -> Result<Self, (usize, RouteError)> {
        let mut compiled: Vec<Compiled> = Vec::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            let c = Compiled::new(i, spec).map_err(|e| (i, e))?;
            if let Some(other) = compiled
                .iter()
                .find(|o| o.same_shape(&c) && o.methods_overlap(&c))
            {
                return Err((i, RouteError::Duplicate { other: other.index }));
            }
            compiled.push(c);
        }
        Ok(Self { specs, compiled })
    }

    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    pub fn specs(&self) -> &[RouteSpec] {
        &self.specs
    }

    /// Finds the route for `method` and the already-normalized `path`.
    ///
    /// The most specific matching pattern wins, segment by segment from the
    /// left: a literal beats `{param}`, which beats `*`; then a pattern
    /// without `*` beats one with it. Among routes with that very pattern, one
    /// listing the method beats one taking any method. If none of them takes
    /// the method the answer is `MethodNotAllowed`, even when a less specific
    /// route would take it: a public `/docs/*` must not make
    /// `DELETE /docs/secret` public because the `/docs/secret` route lists
    /// only GET.
    ///
    /// Literals match the decoded segment ignoring ASCII case, as a
    /// case-insensitive upstream would. If a case-sensitive upstream, or one
    /// matching the path as sent, would pick another route, the answer is
    /// `Ambiguous`; finding no route at all that way is no conflict (that
    /// upstream answers 404 itself).
    pub fn find<'a>(&'a self, method: &str, path: &NormalizedPath) -> Lookup<'a> {
        let method = method.to_ascii_uppercase();
        let index = match self.choose(&method, &path.segments, LATCHKEY_READING) {
            Choice::None => return Lookup::NotFound,
            Choice::Methods(allowed) => return Lookup::MethodNotAllowed { allowed },
            Choice::Route(i) => i,
        };
        for reading in OTHER_READINGS {
            let other = match self.choose(&method, &path.segments, reading) {
                Choice::None => continue,
                Choice::Route(i) if i == index => continue,
                Choice::Route(i) => Some(i),
                Choice::Methods(_) => None,
            };
            return Lookup::Ambiguous { index, other };
        }
        let (Some(route), Some(compiled)) = (self.specs.get(index), self.compiled.get(index))
        else {
            return Lookup::NotFound;
        };
        let params = compiled
            .segments
            .iter()
            .zip(&path.segments)
            .filter_map(|(p, s)| match p {
                PatternSegment::Param(name) => Some((name.clone(), s.decoded.clone())),
                PatternSegment::Literal { .. } => None,
            })
            .collect();
        Lookup::Found(Matched {
            index,
            route,
            params,
        })
    }

    fn choose(&self, method: &str, segments: &[Segment], reading: Reading) -> Choice {
        let mut best: Vec<&Compiled> = Vec::new();
        for c in &self.compiled {
            if !c.matches(segments, reading) {
                continue;
            }
            match best.first().map(|b| c.rank.cmp(&b.rank)) {
                None | Some(std::cmp::Ordering::Greater) => best = vec![c],
                Some(std::cmp::Ordering::Equal) => best.push(c),
                Some(std::cmp::Ordering::Less) => {}
            }
        }
        if best.is_empty() {
            return Choice::None;
        }
        let explicit = best.iter().find(|c| {
            c.methods
                .as_ref()
                .is_some_and(|ms| ms.iter().any(|m| m == method))
        });
        if let Some(c) = explicit.or_else(|| best.iter().find(|c| c.methods.is_none())) {
            return Choice::Route(c.index);
        }
        let mut allowed: Vec<String> = best
            .iter()
            .flat_map(|c| c.methods.iter().flatten().cloned())
            .collect();
        allowed.sort();
        allowed.dedup();
        Choice::Methods(allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> NormalizedPath {
        NormalizedPath::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"))
    }

    fn segs(raw: &str) -> Vec<String> {
        parse(raw).segments().map(str::to_owned).collect()
    }

    fn refused(raw: &str) -> PathError {
        NormalizedPath::parse(raw).expect_err(raw)
    }

    fn spec(methods: &[&str], path: &str, scopes: &[&str], public: bool) -> RouteSpec {
        RouteSpec {
            methods: methods.iter().map(|m| (*m).to_owned()).collect(),
            path: path.to_owned(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            public,
        }
    }

    fn table(specs: Vec<RouteSpec>) -> RouteTable {
        RouteTable::new(specs).unwrap()
    }

    /// The route index found, or `None` for anything but `Found`.
    fn found(t: &RouteTable, method: &str, raw: &str) -> Option<usize> {
        match t.find(method, &parse(raw)) {
            Lookup::Found(m) => Some(m.index),
            _ => None,
        }
    }

    fn bad_pattern(path: &str) -> RouteError {
        RouteTable::new(vec![spec(&[], path, &[], false)])
            .map(|_| ())
            .expect_err(path)
            .1
    }

    /// 0: public status, 1: documents list, 2: one document, 3: anything
    /// below documents, 4: a public area.
    fn api() -> RouteTable {
        table(vec![
            spec(&["GET"], "/api/v1/status", &[], true),
            spec(&["GET", "POST"], "/api/v1/documents", &["docs.read"], false),
            spec(&[], "/api/v1/documents/{id}", &["docs.read"], false),
            spec(&[], "/api/v1/documents/*", &["docs.admin"], false),
            spec(&[], "/api/v1/public/*", &[], true),
        ])
    }

    #[test]
    fn dot_segments_are_refused_and_empty_ones_dropped() {
        for raw in [
            "/api/v1/public/../documents",
            "/api/v1/public/%2e%2e/documents",
            "/api/v1/public/%2E%2E/documents",
            "/api/v1/public/.%2e/documents",
            "/api/v1/public/%2e./documents",
            "/api/v1/./documents",
            "/api/v1/%2e/documents",
            "/api/v1/documents/x/..",
            "/api/v1/documents/.",
            "/..",
            "/%2e%2e/api",
            "/a/../..",
        ] {
            assert_eq!(
                NormalizedPath::parse(raw),
                Err(PathError::DotSegment),
                "{raw}"
            );
        }
        let docs = ["api", "v1", "documents"];
        for raw in ["//api//v1///documents", "/api/v1/documents/"] {
            assert_eq!(segs(raw), docs, "{raw}");
            assert_eq!(found(&api(), "GET", raw), Some(1), "{raw}");
        }
    }

    #[test]
    fn case_is_ignored_for_literals() {
        assert_eq!(found(&api(), "GET", "/API/V1/Documents"), Some(1));
        assert_eq!(found(&api(), "get", "/api/v1/documents"), Some(1));
        // Decoded letters are letters: `%64` is `d`.
        assert_eq!(found(&api(), "GET", "/api/v1/%64ocuments"), Some(1));
    }

    #[test]
    fn ambiguous_spellings_are_refused() {
        for (raw, want) in [
            ("/api/v1/documents%2Fsecret", PathError::EncodedSlash),
            ("/api/v1/documents%2fsecret", PathError::EncodedSlash),
            ("/api/v1/public/..%2Fdocuments", PathError::EncodedSlash),
            (
                "/api/v1/public%5c..%5cdocuments",
                PathError::EncodedBackslash,
            ),
            ("/api/v1/public\\..\\documents", PathError::Backslash),
            ("/api/v1/documents;jsessionid=1", PathError::Semicolon),
            ("/api/v1/public/..;/documents", PathError::Semicolon),
            (
                "/api/v1/public/..%3B/documents",
                PathError::EncodedSemicolon,
            ),
            ("/api/v1/documents%00", PathError::EncodedControl),
            ("/api/v1/documents%0a", PathError::EncodedControl),
            ("/api/v1/documents%0D%0AX:1", PathError::EncodedControl),
            ("/api/v1/documents%7f", PathError::EncodedControl),
            ("/api/v1/documents%C2%85", PathError::EncodedControl),
            ("/api/v1/documents\r\nX: 1", PathError::InvalidByte),
            ("/api/v1/docu ments", PathError::InvalidByte),
            ("/api/v1/docu\tments", PathError::InvalidByte),
            ("/api/v1/docu\0ments", PathError::InvalidByte),
            ("/api/v1/documénts", PathError::InvalidByte),
            ("/api/v1/%zz", PathError::BadEncoding),
            ("/api/v1/documents%", PathError::BadEncoding),
            ("/api/v1/documents%4", PathError::BadEncoding),
            ("/api/v1/%4%41", PathError::BadEncoding),
            ("/api/v1/%u002e%u002e", PathError::BadEncoding),
            ("/api/v1/%ff", PathError::NotUtf8),
            ("/api/v1/%C0%AE%C0%AE", PathError::NotUtf8),
            ("/api/v1/document%C5%BF", PathError::AsciiLookalike),
            ("/api/v1/%E2%84%AAeys", PathError::AsciiLookalike),
            ("/api/v1/%EF%BD%84ocuments", PathError::AsciiLookalike),
            ("/adm%C4%B1n", PathError::AsciiLookalike),
            ("/%C4%B0d", PathError::AsciiLookalike),
            ("/api/v1/documents.", PathError::TrailingDotOrSpace),
            ("/api/v1/documents%20", PathError::TrailingDotOrSpace),
            ("/api/v1/.../documents", PathError::TrailingDotOrSpace),
            ("/..", PathError::DotSegment),
            ("/%2e%2e/api", PathError::DotSegment),
            ("/a/../..", PathError::DotSegment),
            ("/api/v1/documents#frag", PathError::Fragment),
            ("/api/v1/status?x=#y", PathError::Fragment),
            ("http://evil/api/v1/documents", PathError::NotOriginForm),
            ("evil:443", PathError::NotOriginForm),
            ("*", PathError::NotOriginForm),
            ("", PathError::Empty),
        ] {
            assert_eq!(refused(raw), want, "{raw}");
        }
    }

    #[test]
    fn length_limit() {
        let ok = format!("/{}", "a".repeat(MAX_TARGET_LEN - 1));
        assert_eq!(ok.len(), MAX_TARGET_LEN);
        assert!(NormalizedPath::parse(&ok).is_ok());
        assert_eq!(refused(&format!("{ok}a")), PathError::TooLong);
    }

    #[test]
    fn readable_encodings_are_accepted() {
        assert_eq!(segs("/files/a%20b"), ["files", "a b"]);
        assert_eq!(segs("/users/jos%C3%A9"), ["users", "josé"]);
        // ß upper-cases to two letters: no server reads it as one.
        assert_eq!(segs("/stra%C3%9Fe"), ["straße"]);
        assert_eq!(segs("/q/%3F%23%25"), ["q", "?#%"]);
    }

    #[test]
    fn double_encoding_is_decoded_once() {
        let p = parse("/api/v1/public/%252e%252e/documents");
        assert_eq!(
            p.segments().collect::<Vec<_>>(),
            ["api", "v1", "public", "%2e%2e", "documents"]
        );
        assert_eq!(p.forward_path(), "/api/v1/public/%252e%252e/documents");
        assert_eq!(
            found(&api(), "GET", "/api/v1/public/%252e%252e/documents"),
            Some(4)
        );
        // A literal `%2e%2e` can never pop a segment.
        assert_eq!(segs("/%252e%252e"), ["%2e%2e"]);
    }

    #[test]
    fn query_is_kept_raw_and_not_matched() {
        let p = parse("/api/v1/status?x=/../documents&y=%2F");
        assert_eq!(p.query(), Some("x=/../documents&y=%2F"));
        assert_eq!(p.forward_path(), "/api/v1/status");
        assert_eq!(
            found(&api(), "GET", "/api/v1/status?x=/../documents"),
            Some(0)
        );
        assert_eq!(parse("/a?").query(), Some(""));
        assert_eq!(parse("/a").query(), None);
        assert_eq!(parse("/a?b?c").query(), Some("b?c"));
        // The query is not the path: `;` and `\` there are the upstream's business.
        assert_eq!(parse("/a?b;c\\d").query(), Some("b;c\\d"));
    }

    #[test]
    fn forward_path_examples() {
        for (raw, want) in [
            ("/a//b//c/d/", "/a/b/c/d/"),
            ("/", "/"),
            ("//", "/"),
            ("/a/b", "/a/b"),
            ("/a/b/", "/a/b/"),
            ("/A/%62%2ec/x%20y?q=1", "/A/%62%2ec/x%20y"),
        ] {
            assert_eq!(parse(raw).forward_path(), want, "{raw}");
        }
    }

    #[test]
    fn trailing_slash_is_ignored_for_matching() {
        let t = api();
        assert_eq!(found(&t, "GET", "/api/v1/documents/"), Some(1));
        assert_eq!(found(&t, "GET", "/api/v1/status/"), Some(0));
    }

    #[test]
    fn literal_beats_param_beats_wildcard() {
        let t = table(vec![
            spec(&[], "/docs/*", &["a"], false),
            spec(&[], "/docs/{id}", &["b"], false),
            spec(&[], "/docs/new", &["c"], false),
            spec(&[], "/docs/{id}/*", &["d"], false),
            spec(&[], "/docs/{id}/raw", &["e"], false),
        ]);
        assert_eq!(found(&t, "GET", "/docs/new"), Some(2));
        assert_eq!(found(&t, "GET", "/docs/42"), Some(1));
        assert_eq!(found(&t, "GET", "/docs"), Some(0));
        assert_eq!(found(&t, "GET", "/docs/42/raw"), Some(4));
        assert_eq!(found(&t, "GET", "/docs/42/raw/x"), Some(3));
        assert_eq!(found(&t, "GET", "/docs/42/other"), Some(3));
        // Leftmost difference decides: `/docs/new/*` is not a literal at 3.
        assert_eq!(found(&t, "GET", "/docs/new/raw"), Some(4));
        assert_eq!(found(&t, "GET", "/other"), None);
    }

    #[test]
    fn exact_pattern_beats_wildcard_covering_it() {
        let t = table(vec![
            spec(&[], "/static/*", &[], true),
            spec(&[], "/static", &["x"], false),
        ]);
        assert_eq!(found(&t, "GET", "/static"), Some(1));
        assert_eq!(found(&t, "GET", "/static/a.css"), Some(0));
    }

    #[test]
    fn specific_route_without_the_method_is_405_not_the_wildcard() {
        let t = table(vec![
            spec(&[], "/docs/*", &[], true),
            spec(
                &["GET", "HEAD", "get"],
                "/docs/secret",
                &["docs.read"],
                false,
            ),
            spec(&["PUT"], "/docs/secret", &["docs.write"], false),
        ]);
        assert_eq!(found(&t, "GET", "/docs/secret"), Some(1));
        assert_eq!(found(&t, "put", "/docs/secret"), Some(2));
        assert_eq!(
            t.find("DELETE", &parse("/docs/secret")),
            Lookup::MethodNotAllowed {
                allowed: vec!["GET".into(), "HEAD".into(), "PUT".into()]
            }
        );
        assert_eq!(
            t.find("DELETE", &parse("/Docs//SECRET/")),
            Lookup::MethodNotAllowed {
                allowed: vec!["GET".into(), "HEAD".into(), "PUT".into()]
            }
        );
        assert_eq!(found(&t, "DELETE", "/docs/other"), Some(0));
    }

    #[test]
    fn explicit_method_beats_any() {
        let t = table(vec![
            spec(&[], "/docs/{id}", &["docs.write"], false),
            spec(&["GET"], "/docs/{key}", &[], true),
        ]);
        assert_eq!(found(&t, "GET", "/docs/1"), Some(1));
        assert_eq!(found(&t, "DELETE", "/docs/1"), Some(0));
        let t = table(vec![spec(&["*"], "/a", &[], false)]);
        assert_eq!(found(&t, "PATCH", "/a"), Some(0));
        let t = table(vec![spec(&["GET", "*"], "/a", &[], false)]);
        assert_eq!(found(&t, "BREW", "/a"), Some(0));
    }

    #[test]
    fn params_are_decoded_in_original_case() {
        let t = table(vec![spec(&[], "/orgs/{org}/docs/{doc_id}", &[], false)]);
        let Lookup::Found(m) = t.find("GET", &parse("/ORGS/Acme%20Inc/docs/AbC%3F")) else {
            panic!("not found");
        };
        assert_eq!(m.index, 0);
        assert_eq!(m.route, &t.specs()[0]);
        assert_eq!(
            m.params,
            [
                ("org".to_owned(), "Acme Inc".to_owned()),
                ("doc_id".to_owned(), "AbC?".to_owned())
            ]
        );
    }

    #[test]
    fn param_needs_one_non_empty_segment() {
        let t = table(vec![spec(&[], "/docs/{id}", &[], false)]);
        assert_eq!(found(&t, "GET", "/docs/"), None);
        assert_eq!(found(&t, "GET", "/docs//"), None);
        assert_eq!(found(&t, "GET", "/docs"), None);
        assert_eq!(found(&t, "GET", "/docs/a/b"), None);
        assert_eq!(found(&t, "GET", "/docs//a"), Some(0));
    }

    #[test]
    fn wildcard_matches_zero_or_more_segments() {
        let t = table(vec![spec(&[], "/static/*", &[], true)]);
        for raw in [
            "/static",
            "/static/",
            "/static/a",
            "/static/a/b/c",
            "/STATIC/x",
        ] {
            assert_eq!(found(&t, "GET", raw), Some(0), "{raw}");
        }
        assert_eq!(found(&t, "GET", "/staticx"), None);
        assert_eq!(found(&t, "GET", "/"), None);
        let t = table(vec![spec(&[], "/*", &[], true)]);
        assert_eq!(found(&t, "GET", "/"), Some(0));
        assert_eq!(found(&t, "GET", "/a/b"), Some(0));
    }

    #[test]
    fn root_pattern_matches_only_root() {
        let t = table(vec![spec(&[], "/", &[], true)]);
        assert_eq!(found(&t, "GET", "/"), Some(0));
        assert_eq!(found(&t, "GET", "//"), Some(0));
        assert_eq!(found(&t, "GET", "/a"), None);
    }

    #[test]
    fn case_ambiguity_is_refused() {
        let t = table(vec![
            spec(&["GET"], "/docs/readme", &[], true),
            spec(&["GET"], "/docs/{name}", &["docs.read"], false),
        ]);
        assert_eq!(found(&t, "GET", "/docs/readme"), Some(0));
        assert_eq!(found(&t, "GET", "/docs/other"), Some(1));
        // A case-sensitive upstream serves the document named README.
        assert_eq!(
            t.find("GET", &parse("/docs/README")),
            Lookup::Ambiguous {
                index: 0,
                other: Some(1)
            }
        );
        // No other reading: the case-insensitive one stands.
        let t = table(vec![spec(&["GET"], "/Docs/ReadMe", &[], true)]);
        assert_eq!(found(&t, "GET", "/docs/readme"), Some(0));
    }

    #[test]
    fn encoded_literal_ambiguity_is_refused() {
        let t = table(vec![
            spec(&["POST"], "/users/signup", &[], true),
            spec(&[], "/users/{id}", &["users.write"], false),
        ]);
        assert_eq!(found(&t, "POST", "/users/signup"), Some(0));
        // Express matches `%73ignup` against the raw path: `/users/{id}`.
        assert_eq!(
            t.find("POST", &parse("/users/%73ignup")),
            Lookup::Ambiguous {
                index: 0,
                other: Some(1)
            }
        );
        // With no rival route, encoded letters are just letters.
        let t = table(vec![spec(&["POST"], "/users/signup", &[], true)]);
        assert_eq!(found(&t, "POST", "/users/%73ignup"), Some(0));
    }

    #[test]
    fn case_ambiguity_against_a_route_lacking_the_method() {
        let t = table(vec![
            spec(&["GET"], "/a/b", &[], true),
            spec(&["POST"], "/a/{x}", &["a.write"], false),
        ]);
        assert_eq!(
            t.find("GET", &parse("/a/B")),
            Lookup::Ambiguous {
                index: 0,
                other: None
            }
        );
    }

    #[test]
    fn not_found_and_empty_table() {
        let t = table(vec![]);
        assert!(t.is_empty());
        assert_eq!(t.find("GET", &parse("/")), Lookup::NotFound);
        assert!(!api().is_empty());
        assert_eq!(api().specs().len(), 5);
        assert_eq!(api().find("GET", &parse("/api/v2")), Lookup::NotFound);
    }

    #[test]
    fn duplicates_are_refused() {
        let dup = |a: RouteSpec, b: RouteSpec| RouteTable::new(vec![a, b]).map(|_| ()).err();
        let want = Some((1, RouteError::Duplicate { other: 0 }));
        assert_eq!(
            dup(
                spec(&["GET"], "/a/{x}", &[], false),
                spec(&["get", "PUT"], "/A/{y}/", &[], true)
            ),
            want
        );
        assert_eq!(
            dup(
                spec(&[], "/a/*", &[], false),
                spec(&["*"], "/a/*", &[], false)
            ),
            want
        );
        assert_eq!(
            dup(spec(&[], "/", &[], false), spec(&[], "/", &[], false)),
            want
        );
        // Different methods, shapes, or an explicit method refining "any".
        assert_eq!(
            dup(
                spec(&["GET"], "/a/{x}", &[], false),
                spec(&["PUT"], "/a/{x}", &[], false)
            ),
            None
        );
        assert_eq!(
            dup(
                spec(&[], "/a/{x}", &[], false),
                spec(&["GET"], "/a/{x}", &[], true)
            ),
            None
        );
        assert_eq!(
            dup(
                spec(&[], "/a/{x}", &[], false),
                spec(&[], "/a/x", &[], false)
            ),
            None
        );
        assert_eq!(
            dup(spec(&[], "/a/*", &[], false), spec(&[], "/a", &[], false)),
            None
        );
        assert_eq!(
            dup(
                spec(&[], "/a/{x}", &[], false),
                spec(&[], "/a/{x}/*", &[], false)
            ),
            None
        );
    }

    #[test]
    fn invalid_patterns_are_refused() {
        for (path, want) in [
            ("", RouteError::NotAbsolute),
            ("api/v1", RouteError::NotAbsolute),
            ("//", RouteError::EmptySegment),
            ("/a//b", RouteError::EmptySegment),
            ("/a//", RouteError::EmptySegment),
            ("/a/./b", RouteError::DotSegment),
            ("/a/..", RouteError::DotSegment),
            ("/a/%2e", RouteError::InvalidLiteral("%2e".into())),
            ("/a?x=1", RouteError::InvalidLiteral("a?x=1".into())),
            ("/a#x", RouteError::InvalidLiteral("a#x".into())),
            ("/a;b", RouteError::InvalidLiteral("a;b".into())),
            ("/a\\b", RouteError::InvalidLiteral("a\\b".into())),
            ("/a b", RouteError::InvalidLiteral("a b".into())),
            ("/dé", RouteError::InvalidLiteral("dé".into())),
            ("/a*", RouteError::InvalidLiteral("a*".into())),
            ("/v1.", RouteError::InvalidLiteral("v1.".into())),
            ("/a{b}c", RouteError::InvalidLiteral("a{b}c".into())),
            ("/a{b}", RouteError::InvalidParam("a{b}".into())),
            ("/{}", RouteError::InvalidParam("{}".into())),
            ("/{a-b}", RouteError::InvalidParam("{a-b}".into())),
            ("/{id}x", RouteError::InvalidParam("{id}x".into())),
            ("/x{id}", RouteError::InvalidParam("x{id}".into())),
            ("/{id", RouteError::InvalidParam("{id".into())),
            ("/{{id}}", RouteError::InvalidParam("{{id}}".into())),
            ("/{id}/{id}", RouteError::DuplicateParam("id".into())),
            ("/*/a", RouteError::WildcardNotLast),
            ("/a/*/*", RouteError::WildcardNotLast),
        ] {
            assert_eq!(bad_pattern(path), want, "{path:?}");
        }
        for m in ["", "G ET", "GET,POST", "M-SEARCH", "**"] {
            assert_eq!(
                RouteTable::new(vec![spec(&[m], "/a", &[], false)]).map(|_| ()),
                Err((0, RouteError::InvalidMethod(m.into()))),
                "{m:?}"
            );
        }
        assert_eq!(
            RouteTable::new(vec![
                spec(&[], "/a", &[], false),
                spec(&[], "/b", &["x"], true)
            ])
            .map(|_| ()),
            Err((1, RouteError::PublicWithScopes))
        );
        // Accepted spellings.
        for path in [
            "/",
            "/a/",
            "/static/*/",
            "/{Id_2}",
            "/a-b.c~d/@:!$&'()+,=",
            "/*",
        ] {
            assert!(
                RouteTable::new(vec![spec(&[], path, &[], false)]).is_ok(),
                "{path}"
            );
        }
    }

    #[test]
    fn messages_are_sentences() {
        assert_eq!(
            PathError::EncodedSlash.to_string(),
            "The path contains an encoded slash (%2F), which servers read differently."
        );
        assert_eq!(
            RouteError::InvalidParam("{a-b}".into()).to_string(),
            "The segment `{a-b}` is not a parameter: write `{name}` as a whole segment, the name made of letters, digits and `_`."
        );
        assert_eq!(
            RouteError::Duplicate { other: 2 }.to_string(),
            "Same path and method as routes[2]: one of the two would never apply."
        );
        assert!(
            PathError::TooLong
                .to_string()
                .contains(&MAX_TARGET_LEN.to_string())
        );
    }

    #[test]
    fn spec_from_config() {
        use serde::de::value::{Error, MapDeserializer};
        let read = |fields: &[(&'static str, &'static str)]| {
            RouteSpec::deserialize(MapDeserializer::<_, Error>::new(fields.iter().copied()))
        };
        assert_eq!(
            read(&[("path", "/a")]).unwrap(),
            spec(&[], "/a", &[], false)
        );
        assert!(read(&[("path", "/a"), ("scope", "x")]).is_err());
    }

    /// Whatever a tricky target resolves to below `/api/v1/documents` must
    /// get a documents route, never the public ones; and anything refused
    /// or resolved elsewhere must not reach documents either.
    #[test]
    fn no_spelling_reaches_documents_through_a_public_route() {
        let t = api();
        let prefixes = [
            "/api/v1/public/",
            "/api/v1/status/",
            "/API/v1/Public/",
            "/api/v1/",
        ];
        let middles = [
            "",
            "..",
            "%2e%2e",
            "%2E%2E",
            ".%2e",
            "%2e.",
            "..;",
            "..%3b",
            "..%2f",
            "..%2F",
            "%2e%2e%2f",
            "..%5c",
            "..\\",
            "%252e%252e",
            "..%00",
            ".",
            "%2e",
            "...",
            "..%20",
            "%c0%ae%c0%ae",
            "%u002e%u002e",
            "..%c0%af",
            "x/..",
            "x/%2e%2e",
            "/..",
            "./..",
        ];
        let suffixes = [
            "/documents",
            "//documents",
            "/./documents",
            "/documents/",
            "/Documents",
            "/%64ocuments",
            "/documents%2Fx",
            "/documents?x=1",
            "/documents#x",
            "/documents/1",
            "/documents/1/raw",
            "/DOCUMENTS/%2e/1",
            "/document%C5%BF",
            "/documents.",
        ];
        let (mut resolved, mut refused) = (0, 0);
        for prefix in prefixes {
            for middle in middles {
                for suffix in suffixes {
                    let raw = format!("{prefix}{middle}{suffix}");
                    let Ok(path) = NormalizedPath::parse(&raw) else {
                        refused += 1;
                        continue;
                    };
                    let lower: Vec<String> = path.segments().map(str::to_ascii_lowercase).collect();
                    let under_docs =
                        lower.starts_with(&["api".into(), "v1".into(), "documents".into()]);
                    for method in ["GET", "POST", "DELETE"] {
                        match t.find(method, &path) {
                            Lookup::Found(m) => {
                                assert_eq!(
                                    under_docs,
                                    (1..=3).contains(&m.index),
                                    "{method} {raw}"
                                );
                                if m.route.public {
                                    assert!(!under_docs, "{method} {raw}");
                                }
                                if m.index == 0 {
                                    assert_eq!(lower, ["api", "v1", "status"], "{raw}");
                                }
                                if under_docs {
                                    resolved += 1;
                                }
                            }
                            Lookup::MethodNotAllowed { allowed } => {
                                assert!(under_docs || lower == ["api", "v1", "status"], "{raw}");
                                assert!(!allowed.is_empty());
                            }
                            Lookup::NotFound => assert!(!under_docs, "{raw}"),
                            Lookup::Ambiguous { .. } => {
                                panic!("{raw}: no case-sensitive rival here")
                            }
                        }
                    }
                }
            }
        }
        assert!(
            resolved >= 18 && refused > 1000,
            "{resolved} resolved, {refused} refused"
        );
    }
}
