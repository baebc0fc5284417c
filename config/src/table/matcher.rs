//! Compiled request conditions (`match:` of routes and rules) and the checks that build them.
//! Matching borrows from the request and allocates nothing.

use http::{HeaderMap, HeaderName, Method};
use regex::bytes::{Regex, RegexBuilder};

use crate::error::Problems;
use crate::request::RequestView;
use crate::schema::{RequestMatch, ValueMatch};

/// Longest regular expression accepted, in characters.
pub const MAX_REGEX_LEN: usize = 1024;
/// Largest compiled program of a regular expression, bytes (the `regex` crate's size limit).
pub const MAX_REGEX_SIZE: usize = 256 * 1024;
/// Longest query parameter name or value, after decoding, that a condition can match.
const MAX_DECODED: usize = 2048;

#[derive(Debug, Clone)]
pub(crate) enum HostMatch {
    /// Lowercase, no trailing dot.
    Exact(Box<str>),
    /// `*.example.com` stored as `.example.com`.
    Suffix(Box<str>),
}

impl HostMatch {
    fn matches(&self, host: &[u8]) -> bool {
        match self {
            Self::Exact(h) => host == h.as_bytes(),
            Self::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_bytes()),
        }
    }
}

#[derive(Debug, Clone)]
enum PathMatch {
    Exact(Box<str>),
    /// Without trailing slash; empty for `/`, which matches every path.
    Prefix(Box<str>),
    Regex(Regex),
}

impl PathMatch {
    fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(p) => path == &**p,
            Self::Prefix(p) => path.starts_with(&**p) && matches!(path.as_bytes().get(p.len()), None | Some(b'/')),
            Self::Regex(r) => r.is_match(path.as_bytes()),
        }
    }
}

/// A condition on the values of one name.
#[derive(Debug, Clone)]
enum ValueCond {
    Present(bool),
    Exact(Box<[u8]>),
    OneOf(Box<[Box<[u8]>]>),
    Regex(Regex),
}

impl ValueCond {
    fn accepts(&self, value: &[u8]) -> bool {
        match self {
            Self::Present(present) => *present,
            Self::Exact(v) => value == &**v,
            Self::OneOf(vs) => vs.iter().any(|v| value == &**v),
            Self::Regex(r) => r.is_match(value),
        }
    }

    /// Checks the condition against every value the name has in a request.
    fn holds<'v>(&self, mut values: impl Iterator<Item = &'v [u8]>) -> bool {
        match self {
            Self::Present(false) => values.next().is_none(),
            _ => values.any(|v| self.accepts(v)),
        }
    }
}

/// Compiled conditions; every one must hold.
#[derive(Debug, Clone, Default)]
pub(crate) struct Matcher {
    host: Option<HostMatch>,
    path: Option<PathMatch>,
    methods: Box<[Method]>,
    headers: Box<[(HeaderName, ValueCond)]>,
    query: Box<[(Box<[u8]>, ValueCond)]>,
    cookies: Box<[(Box<[u8]>, ValueCond)]>,
}

impl Matcher {
    /// Compiles `m`, reporting problems under `path`. With `with_host` false the host condition
    /// is left to the caller (the route index) and only checked for syntax.
    pub(crate) fn compile(
        m: &RequestMatch,
        path: &str,
        with_host: bool,
        p: &mut Problems,
    ) -> (Self, Option<HostMatch>) {
        let host = m
            .host
            .as_deref()
            .and_then(|h| host_match(h, &format!("{path}.host"), p));
        let path_conditions = [m.path.is_some(), m.path_prefix.is_some(), m.path_regex.is_some()];
        if path_conditions.iter().filter(|x| **x).count() > 1 {
            p.push(
                format!("{path}.path"),
                "give at most one of path, pathPrefix and pathRegex",
            );
        }
        let path_match = if let Some(exact) = &m.path {
            check_path(exact, &format!("{path}.path"), p).then(|| PathMatch::Exact(exact.as_str().into()))
        } else if let Some(prefix) = &m.path_prefix {
            check_path(prefix, &format!("{path}.pathPrefix"), p)
                .then(|| PathMatch::Prefix(prefix.trim_end_matches('/').into()))
        } else if let Some(re) = &m.path_regex {
            regex(re, &format!("{path}.pathRegex"), p).map(PathMatch::Regex)
        } else {
            None
        };
        let methods = m
            .method
            .iter()
            .enumerate()
            .filter_map(|(i, name)| method(name, &format!("{path}.method[{i}]"), p))
            .collect();
        let headers = m
            .headers
            .iter()
            .enumerate()
            .filter_map(|(i, vm)| {
                let at = format!("{path}.headers[{i}]");
                let name = header_name(&vm.name, &format!("{at}.name"), p);
                let cond = value_cond(vm, &at, p);
                Some((name?, cond?))
            })
            .collect();
        let named = |list: &[ValueMatch], field: &str, p: &mut Problems| -> Box<[(Box<[u8]>, ValueCond)]> {
            list.iter()
                .enumerate()
                .filter_map(|(i, vm)| {
                    let at = format!("{path}.{field}[{i}]");
                    if vm.name.is_empty() {
                        p.push(format!("{at}.name"), "name must not be empty");
                    }
                    let cond = value_cond(vm, &at, p)?;
                    Some((vm.name.as_bytes().into(), cond))
                })
                .collect()
        };
        let query = named(&m.query_params, "queryParams", p);
        let cookies = named(&m.cookies, "cookies", p);
        let matcher = Self {
            host: if with_host { host.clone() } else { None },
            path: path_match,
            methods,
            headers,
            query,
            cookies,
        };
        (matcher, host)
    }

    /// Whether every condition holds for `req`, whose host is given already normalized.
    #[inline]
    pub(crate) fn matches(&self, req: &RequestView<'_>, host: &[u8]) -> bool {
        if let Some(h) = &self.host
            && !h.matches(host)
        {
            return false;
        }
        if let Some(pm) = &self.path
            && !pm.matches(req.path)
        {
            return false;
        }
        if !self.methods.is_empty() && !self.methods.contains(req.method) {
            return false;
        }
        self.headers
            .iter()
            .all(|(name, cond)| cond.holds(req.headers.get_all(name).iter().map(|v| v.as_bytes())))
            && self.query.iter().all(|(name, cond)| query_holds(req.query, name, cond))
            && self
                .cookies
                .iter()
                .all(|(name, cond)| cond.holds(cookies(req.headers).filter(|(n, _)| n == &&**name).map(|(_, v)| v)))
    }
}

fn query_holds(query: &str, name: &[u8], cond: &ValueCond) -> bool {
    let mut value_buf = [0u8; MAX_DECODED];
    let mut name_buf = [0u8; MAX_DECODED];
    let mut found = false;
    for pair in query.as_bytes().split(|b| *b == b'&') {
        let (raw_name, raw_value) = match pair.iter().position(|b| *b == b'=') {
            Some(eq) => (&pair[..eq], &pair[eq + 1..]),
            None => (pair, &pair[..0]),
        };
        if percent_decode(raw_name, &mut name_buf) != Some(name) {
            continue;
        }
        found = true;
        if let Some(value) = percent_decode(raw_value, &mut value_buf)
            && !matches!(cond, ValueCond::Present(false))
            && cond.accepts(value)
        {
            return true;
        }
    }
    matches!(cond, ValueCond::Present(false)) && !found
}

/// Decodes `%XX` escapes into `buf`; `None` if the result does not fit. Malformed escapes are
/// kept as they are, as browsers do.
fn percent_decode<'b>(raw: &[u8], buf: &'b mut [u8]) -> Option<&'b [u8]> {
    if !raw.contains(&b'%') {
        let out = buf.get_mut(..raw.len())?;
        out.copy_from_slice(raw);
        return Some(out);
    }
    let mut n = 0;
    let mut i = 0;
    while i < raw.len() {
        let byte = match (raw[i], raw.get(i + 1).and_then(hex), raw.get(i + 2).and_then(hex)) {
            (b'%', Some(hi), Some(lo)) => {
                i += 3;
                hi << 4 | lo
            }
            (b, _, _) => {
                i += 1;
                b
            }
        };
        *buf.get_mut(n)? = byte;
        n += 1;
    }
    Some(&buf[..n])
}

fn hex(b: &u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Every `(name, value)` cookie pair of a request, over all its `cookie` headers.
pub(crate) fn cookies(headers: &HeaderMap) -> impl Iterator<Item = (&[u8], &[u8])> {
    headers.get_all(http::header::COOKIE).iter().flat_map(|h| {
        h.as_bytes().split(|b| *b == b';').filter_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|b| *b == b'=')?;
            let value = &pair[eq + 1..];
            let value = value
                .strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
                .unwrap_or(value);
            Some((pair[..eq].trim_ascii_end(), value))
        })
    })
}

/// Lowercases `host` into `buf` without its port and trailing dot; `None` if it cannot match
/// any host condition (too long for a DNS name).
#[inline]
pub(crate) fn normalize_host<'b>(host: &str, buf: &'b mut [u8; 256]) -> Option<&'b [u8]> {
    let bytes = host.as_bytes();
    let end = if bytes.first() == Some(&b'[') {
        bytes.iter().position(|b| *b == b']').map_or(bytes.len(), |i| i + 1)
    } else {
        bytes.iter().position(|b| *b == b':').unwrap_or(bytes.len())
    };
    let mut name = &bytes[..end];
    if let [rest @ .., b'.'] = name {
        name = rest;
    }
    let out = buf.get_mut(..name.len())?;
    for (o, b) in out.iter_mut().zip(name) {
        *o = b.to_ascii_lowercase();
    }
    Some(out)
}

// ---- checks that build compiled parts ------------------------------------------------------

/// A host condition: `*` (any host) gives `None` without a problem.
fn host_match(host: &str, path: &str, p: &mut Problems) -> Option<HostMatch> {
    if host == "*" {
        return None;
    }
    let (wildcard, name) = match host.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, host),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let valid_label = |l: &str| {
        !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if host.contains(':') {
        p.push(
            path,
            format!("host {host:?} must not contain a port; hosts are compared without port"),
        );
        None
    } else if name.len() > 253 || !name.split('.').all(valid_label) {
        p.push(
            path,
            format!("invalid host {host:?}: write a DNS name (shop.example.com) or a leading wildcard (*.example.com)"),
        );
        None
    } else if wildcard {
        Some(HostMatch::Suffix(format!(".{name}").into()))
    } else {
        Some(HostMatch::Exact(name.into()))
    }
}

fn check_path(value: &str, path: &str, p: &mut Problems) -> bool {
    let ok = value.starts_with('/') && !value.bytes().any(|b| b.is_ascii_control() || b == b' ' || b == b'?');
    if !ok {
        p.push(
            path,
            format!("invalid path {value:?}: it must start with / and hold no spaces, controls or ?"),
        );
    }
    ok
}

pub(super) fn method(name: &str, path: &str, p: &mut Problems) -> Option<Method> {
    match Method::from_bytes(name.as_bytes()) {
        Ok(m) if name.bytes().all(|b| !b.is_ascii_lowercase()) => Some(m),
        Ok(_) => {
            p.push(
                path,
                format!("methods are case-sensitive: write {:?}", name.to_ascii_uppercase()),
            );
            None
        }
        Err(_) => {
            p.push(path, format!("invalid method {name:?}"));
            None
        }
    }
}

/// Parses a header name; reports it at `path` if invalid.
pub(crate) fn header_name(name: &str, path: &str, p: &mut Problems) -> Option<HeaderName> {
    match HeaderName::from_bytes(name.as_bytes()) {
        Ok(h) => Some(h),
        Err(_) => {
            p.push(path, format!("invalid header name {name:?}"));
            None
        }
    }
}

fn value_cond(vm: &ValueMatch, at: &str, p: &mut Problems) -> Option<ValueCond> {
    let given = [
        vm.value.is_some(),
        vm.one_of.is_some(),
        vm.regex.is_some(),
        vm.present.is_some(),
    ];
    if given.iter().filter(|g| **g).count() > 1 {
        p.push(at, "give at most one of value, oneOf, regex and present");
        return None;
    }
    Some(if let Some(v) = &vm.value {
        ValueCond::Exact(v.as_bytes().into())
    } else if let Some(vs) = &vm.one_of {
        if vs.is_empty() {
            p.push(format!("{at}.oneOf"), "list at least one value");
            return None;
        }
        ValueCond::OneOf(vs.iter().map(|v| v.as_bytes().into()).collect())
    } else if let Some(re) = &vm.regex {
        ValueCond::Regex(regex(re, &format!("{at}.regex"), p)?)
    } else {
        ValueCond::Present(vm.present.unwrap_or(true))
    })
}

/// Compiles a regular expression that must match a whole value, with the `regex` crate's
/// linear-time engine and bounded size.
fn regex(pattern: &str, path: &str, p: &mut Problems) -> Option<Regex> {
    if pattern.len() > MAX_REGEX_LEN {
        p.push(
            path,
            format!(
                "regex is {} characters long; the limit is {MAX_REGEX_LEN}",
                pattern.len()
            ),
        );
        return None;
    }
    // Parse the pattern alone first: wrapped unparsed, `a)|(b` would escape the anchors.
    if let Err(e) = regex_syntax::Parser::new().parse(pattern) {
        let detail = e.to_string();
        let last = detail.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or(&detail);
        p.push(path, format!("invalid regex {pattern:?}: {}", last.trim()));
        return None;
    }
    match RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(MAX_REGEX_SIZE)
        .dfa_size_limit(4 * MAX_REGEX_SIZE)
        .build()
    {
        Ok(r) => Some(r),
        Err(regex::Error::CompiledTooBig(_)) => {
            p.push(
                path,
                format!("regex compiles to more than {MAX_REGEX_SIZE} bytes; simplify it"),
            );
            None
        }
        Err(e) => {
            let detail = e.to_string();
            let last = detail.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or(&detail);
            p.push(path, format!("invalid regex {pattern:?}: {}", last.trim()));
            None
        }
    }
}

#[cfg(test)]
mod tests;
