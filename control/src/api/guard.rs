//! Who may command the control API: a request that changes something (any method but `GET` and
//! `HEAD`) must carry the API's bearer token when one is configured (`switchyard serve
//! --token-file FILE`), as the proxies' admin APIs ask for theirs; and none may come from a page
//! of another site, which a browser says in `Sec-Fetch-Site`. Reads are open, as on the
//! proxies, so the dashboard and `rollout status` need no token to look.

use std::sync::Arc;

use http::Method;
use http::header::{self, HeaderMap};

/// What a request must show before the controller sees it.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    /// The bearer token commands must present; `None`: none is asked for.
    token: Option<Arc<str>>,
}

/// Why a request was not let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Denied {
    /// A command without the token (401).
    NoToken,
    /// A command with another token (401).
    WrongToken,
    /// A command from another site's page (403).
    CrossSite,
}

impl Denied {
    /// What the client is told, in a sentence with the fix.
    pub(super) fn message(self) -> &'static str {
        match self {
            Self::NoToken => {
                "this control API takes commands only with its bearer token: send Authorization: Bearer TOKEN (switchyard rollout --token-file FILE; the dashboard asks for it)"
            }
            Self::WrongToken => {
                "the bearer token is not this control API's: send the token in the file given to switchyard serve --token-file"
            }
            Self::CrossSite => {
                "a command sent by another site's page is refused (Sec-Fetch-Site: cross-site); use the dashboard this controller serves at /ui/, or the CLI"
            }
        }
    }
}

impl Guard {
    /// Asks every command for `token` (as read from the token file, without surrounding
    /// whitespace). An empty token asks for nothing.
    pub fn bearer(token: &str) -> Self {
        Self {
            token: (!token.is_empty()).then(|| Arc::from(token)),
        }
    }

    /// Whether a token is asked for.
    pub fn asks_token(&self) -> bool {
        self.token.is_some()
    }

    /// Lets a request through, or says why not.
    pub(super) fn admit(&self, method: &Method, headers: &HeaderMap) -> Result<(), Denied> {
        if matches!(*method, Method::GET | Method::HEAD) {
            return Ok(());
        }
        // Browsers name the site of the page that sent a request; the CLI and scripts send no
        // such header. `same-origin` is the dashboard itself, `none` a person typing the URL.
        if headers
            .get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes() == b"cross-site" || v.as_bytes() == b"same-site")
        {
            return Err(Denied::CrossSite);
        }
        let Some(token) = &self.token else {
            return Ok(());
        };
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match presented {
            None => Err(Denied::NoToken),
            Some(p) if constant_time_eq(p.trim().as_bytes(), token.as_bytes()) => Ok(()),
            Some(_) => Err(Denied::WrongToken),
        }
    }
}

/// Compares without stopping at the first difference, so timing tells nothing of the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(n, v)| (http::HeaderName::from_static(n), HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn commands_need_the_token_and_reads_do_not() {
        let guard = Guard::bearer("s3cret");
        assert!(guard.asks_token());
        let post = Method::POST;
        assert_eq!(guard.admit(&post, &headers(&[])), Err(Denied::NoToken));
        assert_eq!(
            guard.admit(&post, &headers(&[("authorization", "Bearer s3creT")])),
            Err(Denied::WrongToken)
        );
        assert_eq!(
            guard.admit(&post, &headers(&[("authorization", "Basic s3cret")])),
            Err(Denied::NoToken)
        );
        assert_eq!(
            guard.admit(&Method::DELETE, &headers(&[("authorization", "Bearer s3cret")])),
            Ok(())
        );
        assert_eq!(guard.admit(&Method::GET, &headers(&[])), Ok(()));
        assert_eq!(guard.admit(&Method::HEAD, &headers(&[])), Ok(()));
        let open = Guard::bearer("");
        assert!(!open.asks_token());
        assert_eq!(open.admit(&post, &headers(&[])), Ok(()));
    }

    #[test]
    fn another_sites_page_cannot_command() {
        for guard in [Guard::default(), Guard::bearer("s3cret")] {
            for site in ["cross-site", "same-site"] {
                let h = headers(&[("sec-fetch-site", site), ("authorization", "Bearer s3cret")]);
                assert_eq!(guard.admit(&Method::POST, &h), Err(Denied::CrossSite), "{site}");
                assert_eq!(guard.admit(&Method::GET, &h), Ok(()), "{site}");
            }
            let own = headers(&[("sec-fetch-site", "same-origin"), ("authorization", "Bearer s3cret")]);
            assert_eq!(guard.admit(&Method::POST, &own), Ok(()));
        }
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
