//! Text for error messages and logs, and the one check of a configured URL.
//!
//! Hostile values (a product name, a notification field, an error body) are
//! quoted short; every message in the workspace cuts them with [`short`].

use serde_json::Value;
use url::Url;

/// `value` cut to `max` characters, with `…` when something was cut.
pub fn short(value: &str, max: usize) -> String {
    match value.char_indices().nth(max) {
        None => value.to_owned(),
        Some((end, _)) => format!("{}…", &value[..end]),
    }
}

/// The start of a body that is not what was expected, trimmed, as text.
pub fn snippet(body: &[u8]) -> String {
    short(String::from_utf8_lossy(body).trim(), 200)
}

/// A JSON value as compact JSON, cut for a message.
pub fn short_json(value: &Value) -> String {
    // JSON leaves DEL and the C1 controls (U+0080-U+009F) unescaped; a log line must not carry them.
    let text: String = value
        .to_string()
        .chars()
        .map(|c| {
            if c.is_control() {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect();
    short(&text, 200)
}

/// Why a setting is not an http(s) URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error(transparent)]
    Invalid(#[from] url::ParseError),
    #[error("scheme {0:?} is not http(s)")]
    Scheme(String),
}

/// Parses a URL and requires `http` or `https`: every endpoint we call or
/// hand to CDSE is one.
pub fn http_url(value: &str) -> Result<Url, UrlError> {
    let url = Url::parse(value)?;
    match url.scheme() {
        "http" | "https" => Ok(url),
        other => Err(UrlError::Scheme(other.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_cuts_at_characters_not_bytes_and_marks_the_cut() {
        assert_eq!(short("abc", 3), "abc");
        assert_eq!(short("abcd", 3), "abc…");
        assert_eq!(short("ääää", 2), "ää…");
        assert_eq!(short("", 0), "");
        assert_eq!(short("a", 0), "…");
    }

    #[test]
    fn snippet_and_short_json_are_one_bounded_line() {
        assert_eq!(snippet(b"  <html>\n"), "<html>");
        assert_eq!(snippet(&[b'x'; 300]).chars().count(), 201);
        assert_eq!(short_json(&Value::from("a\u{7f}b")), "\"a\\u{7f}b\"");
        assert_eq!(
            short_json(&serde_json::json!({"a": [1, 2]})),
            "{\"a\":[1,2]}"
        );
    }

    #[test]
    fn only_http_and_https_urls_pass() {
        assert_eq!(
            http_url("https://catalogue.example/x").unwrap().as_str(),
            "https://catalogue.example/x"
        );
        assert!(http_url("http://127.0.0.1:4566/q").is_ok());
        assert_eq!(
            http_url("ftp://files.example/").unwrap_err().to_string(),
            "scheme \"ftp\" is not http(s)"
        );
        assert_eq!(
            http_url("not a url").unwrap_err().to_string(),
            "relative URL without a base"
        );
    }
}
