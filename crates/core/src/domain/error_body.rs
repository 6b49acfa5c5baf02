//! CDSE's error bodies, read for the one line an operator or a log needs.
//!
//! The catalogue, the Subscriptions API and the identity service answer in
//! different shapes; each is reduced to CDSE's own message.

use serde_json::Value;

use crate::domain::text::{short, short_json, snippet};

/// CDSE's own words from an error body: `detail` as a list of
/// `{loc, msg}` (validation errors) or an object (`message`, `ErrorMessage`),
/// a top-level `message`, the identity service's `error_description`, OData's
/// `error.message`, a bare `error`, or else the start of the body; always one line.
pub fn error_message(body: &[u8]) -> String {
    let Ok(json) = serde_json::from_slice::<Value>(body) else {
        return if body.iter().all(u8::is_ascii_whitespace) {
            "(empty body)".into()
        } else {
            format!("{:?}", snippet(body))
        };
    };
    let message = match json.get("detail") {
        Some(Value::Array(items)) => {
            let parts: Vec<String> = items.iter().map(validation_error).collect();
            (!parts.is_empty()).then(|| parts.join("; "))
        }
        Some(Value::Object(detail)) => ["message", "ErrorMessage", "msg"]
            .iter()
            .find_map(|key| detail.get(*key).and_then(Value::as_str))
            .map(|message| {
                let details: Vec<String> = detail
                    .get("ErrorDetail")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(validation_error)
                    .collect();
                if details.is_empty() {
                    message.to_owned()
                } else {
                    format!("{message} ({})", details.join("; "))
                }
            }),
        Some(Value::String(detail)) => Some(detail.clone()),
        _ => None,
    }
    .or_else(|| {
        json.get("message")
            .and_then(Value::as_str)
            .map(str::to_owned)
    })
    // The identity service (Keycloak): `{"error": "invalid_grant", "error_description": "..."}`.
    .or_else(|| {
        json.get("error_description")
            .and_then(Value::as_str)
            .map(str::to_owned)
    })
    // OData's own shape: `{"error": {"code": "...", "message": "..."}}`.
    .or_else(|| {
        json.pointer("/error/message")
            .and_then(Value::as_str)
            .map(str::to_owned)
    })
    // A bare `{"error": "..."}`, as our own endpoint answers.
    .or_else(|| json.get("error").and_then(Value::as_str).map(str::to_owned));
    // One line, whatever the body held.
    short(
        &message
            .unwrap_or_else(|| short_json(&json))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
        300,
    )
}

/// `{"loc": ["query", "$skip"], "msg": "..."}` as `query.$skip: ...`.
fn validation_error(item: &Value) -> String {
    let msg = item
        .get("msg")
        .and_then(Value::as_str)
        .map_or_else(|| short_json(item), str::to_owned);
    let loc: Vec<String> = item
        .get("loc")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|part| {
            part.as_str()
                .map_or_else(|| part.to_string(), str::to_owned)
        })
        .collect();
    if loc.is_empty() {
        msg
    } else {
        format!("{}: {msg}", loc.join("."))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/../../tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn error_messages_are_cdses_own_words() {
        assert_eq!(
            error_message(&fixture("cdse-odata-error-skip.json")),
            "query.$skip: Input should be less than or equal to 10000"
        );
        assert_eq!(
            error_message(&fixture("cdse-subscriptions-error-404.json")),
            "Subscription with id 991c4730-cf6f-432a-9f6c-47be0230ff45 not found."
        );
        assert_eq!(
            error_message(
                br#"{"detail":{"ErrorMessage":"Invalid filter","ErrorCode":400,"ErrorDetail":[{"loc":["$filter"],"msg":"bad token"}]}}"#
            ),
            "Invalid filter ($filter: bad token)"
        );
        assert_eq!(
            error_message(br#"{"error":"WAF","message":"Rate limit exceeded","status":429}"#),
            "Rate limit exceeded"
        );
        assert_eq!(
            error_message(
                br#"{"error":"invalid_grant","error_description":"Invalid user credentials"}"#
            ),
            "Invalid user credentials"
        );
        assert_eq!(
            error_message(br#"{"error":{"code":"NotFound","message":"No such\nentity"}}"#),
            "No such entity"
        );
        assert_eq!(
            error_message(br#"{"error":"unauthorised"}"#),
            "unauthorised"
        );
        assert_eq!(error_message(b"  "), "(empty body)");
        assert_eq!(
            error_message(b"<html>\n<h1>502 Bad Gateway</h1>\n</html>"),
            "\"<html>\\n<h1>502 Bad Gateway</h1>\\n</html>\""
        );
        assert_eq!(error_message(b"upstream timeout"), "\"upstream timeout\"");
    }
}
