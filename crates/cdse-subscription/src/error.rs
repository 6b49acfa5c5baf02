//! The errors of CDSE calls, one line each: what the answer means for the
//! operator, then CDSE's own words.

use hls_core::domain::error_body::error_message;
use url::Url;

/// Which CDSE service answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Identity,
    Subscriptions,
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Identity => "identity service",
            Self::Subscriptions => "Subscriptions API",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SubscriptionsError {
    /// CDSE answered with an error status; `message` is CDSE's own.
    #[error("{}", refused_line(*service, *status, message))]
    Refused {
        service: Service,
        status: u16,
        message: String,
    },
    #[error("cannot reach the CDSE {service} at {url}: {reason}")]
    Unreachable {
        service: Service,
        url: String,
        reason: String,
    },
    #[error("the CDSE {service} answered HTTP {status} with something unexpected: {reason}")]
    Unexpected {
        service: Service,
        status: u16,
        reason: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("no CDSE password: {0}")]
    Password(String),
}

/// One line per CDSE error: what it means for the operator, then CDSE's words.
fn refused_line(service: Service, status: u16, message: &str) -> String {
    let meaning = match (service, status) {
        (Service::Identity, 400 | 401) => {
            "CDSE refused the login (check CDSE_USERNAME and CDSE_PASSWORD)"
        }
        (Service::Subscriptions, 401) => "CDSE did not accept the access token",
        (_, 403) => "CDSE does not allow this for the account",
        (Service::Subscriptions, 404) => "CDSE found no such subscription",
        (_, 409) => "CDSE refused: it conflicts with an existing subscription",
        (_, 422) => "CDSE rejected the request",
        (_, 429) => "CDSE is limiting the account's requests; try again later",
        (_, 500..) => "CDSE failed; try again later",
        _ => "CDSE refused the request",
    };
    format!("{meaning} (HTTP {status} from the {service}): {message}")
}

/// A call that got no answer, with every cause reqwest gives (the last one
/// usually says why: refused, timed out, DNS).
pub(crate) fn unreachable(
    service: Service,
    url: &Url,
    error: &reqwest::Error,
) -> SubscriptionsError {
    let mut reason = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        reason.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    SubscriptionsError::Unreachable {
        service,
        url: url.to_string(),
        reason,
    }
}

/// A 2xx status passes; anything else is refused with the message in `body`.
pub(crate) fn check_status(
    service: Service,
    status: u16,
    body: &[u8],
) -> Result<(), SubscriptionsError> {
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(SubscriptionsError::Refused {
            service,
            status,
            message: error_message(body),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_is_one_line_with_cdses_words() {
        let error = SubscriptionsError::Refused {
            service: Service::Subscriptions,
            status: 404,
            message: "Subscription with id x not found.".into(),
        };
        assert_eq!(
            error.to_string(),
            "CDSE found no such subscription (HTTP 404 from the Subscriptions API): \
             Subscription with id x not found."
        );
        let login = SubscriptionsError::Refused {
            service: Service::Identity,
            status: 401,
            message: "Invalid user credentials".into(),
        };
        assert!(login.to_string().contains("CDSE_PASSWORD"), "{login}");
        assert!(refused_line(Service::Identity, 404, "m").starts_with("CDSE refused the request"));
        for status in [401, 403, 404, 409, 422, 429, 500, 503, 418] {
            let line = refused_line(Service::Subscriptions, status, "m").to_string();
            assert!(!line.contains('\n') && line.contains(&format!("HTTP {status}")));
        }
    }
}
