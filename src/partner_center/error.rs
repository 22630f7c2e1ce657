//! Errors of the Partner Center client, named for what a caller does about them.

use std::fmt;

/// What every failed request carries, for the log and for Microsoft support.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Context {
    /// `GET /v1/customers/{id}/subscriptions`, without host or query secrets.
    pub operation: String,
    /// HTTP status of the last answer, if there was one.
    pub http_status: Option<u16>,
    /// Partner Center's error code (`20002`, `900118`, ...), as text.
    pub code: Option<String>,
    /// Partner Center's description, or what the transport said.
    pub description: Option<String>,
    /// `MS-RequestId` of the request (the same across its retries).
    pub request_id: String,
    /// `MS-CorrelationId`: the run.
    pub correlation_id: String,
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.operation)?;
        if let Some(s) = self.http_status {
            write!(f, ": HTTP {s}")?;
        }
        if let Some(c) = &self.code {
            write!(f, ", code {c}")?;
        }
        if let Some(d) = &self.description {
            write!(f, ", {d}")?;
        }
        write!(
            f,
            " (MS-RequestId {}, MS-CorrelationId {})",
            self.request_id, self.correlation_id
        )
    }
}

/// A request that did not give a usable answer.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 404: the customer (or object) does not exist for this partner.
    #[error("not found: {0}")]
    NotFound(Box<Context>),
    /// 403 with code 20002: the customer removed the relationship or delegated admin rights.
    #[error(
        "access revoked, there is no relationship with this customer any more (removed, or delegated admin privileges withdrawn): {0}"
    )]
    AccessRevoked(Box<Context>),
    /// 403 otherwise: the app or user lacks a permission.
    #[error("forbidden: {0}")]
    Forbidden(Box<Context>),
    /// 400 with code 900118.
    #[error("invalid customer id: {0}")]
    InvalidCustomerId(Box<Context>),
    /// Another 4xx: a request Partner Center will not accept as it stands.
    #[error("request refused: {0}")]
    BadRequest(Box<Context>),
    /// 429 on every attempt.
    #[error("still throttled after every attempt (HTTP 429): {0}")]
    Throttled(Box<Context>),
    /// 5xx on every attempt.
    #[error("Partner Center kept failing (server error) after every attempt: {0}")]
    Server(Box<Context>),
    /// No answer in time, on every attempt.
    #[error("no answer within partner_center.request_timeout_secs, on every attempt: {0}")]
    Timeout(Box<Context>),
    /// The connection failed on every attempt (DNS, TCP, TLS).
    #[error("cannot reach Partner Center: {0}")]
    Connection(Box<Context>),
    /// A 2xx whose body is not the JSON expected, or holds a value of the wrong type.
    #[error("unreadable answer (not the JSON expected): {0}")]
    Decode(Box<Context>),
    /// A 2xx that does not prove it is the whole collection: no `items` array, or fewer or
    /// more items than its `totalCount`. Never read as "everything else was removed".
    #[error("incomplete answer, not taken as the customer's full list: {0}")]
    Incomplete(Box<Context>),
    /// A 3xx: pcsync follows no redirects (a proxy or portal in the way, or a moved API).
    #[error(
        "redirected (HTTP 3xx) instead of answered; pcsync follows no redirects: check partner_center.base_url and any proxy in between: {0}"
    )]
    Redirected(Box<Context>),
    /// The pass is stopping (SIGTERM/SIGINT): the request was abandoned, nothing is known.
    #[error("cancelled: pcsync is stopping")]
    Cancelled,
    /// 401 after a fresh token, or a token that could not be had: the whole run stops.
    #[error(transparent)]
    Auth(#[from] super::auth::AuthError),
    /// A value that must never reach a URL (an id that is not a GUID, a non-numeric MPN id).
    #[error("{0}")]
    InvalidInput(String),
}

impl ApiError {
    pub fn context(&self) -> Option<&Context> {
        match self {
            ApiError::NotFound(c)
            | ApiError::AccessRevoked(c)
            | ApiError::Forbidden(c)
            | ApiError::InvalidCustomerId(c)
            | ApiError::BadRequest(c)
            | ApiError::Throttled(c)
            | ApiError::Server(c)
            | ApiError::Timeout(c)
            | ApiError::Connection(c)
            | ApiError::Decode(c)
            | ApiError::Incomplete(c)
            | ApiError::Redirected(c) => Some(c),
            ApiError::Auth(_) | ApiError::InvalidInput(_) | ApiError::Cancelled => None,
        }
    }

    /// True when no other customer can succeed either (credentials, MFA, audience): the run
    /// stops instead of failing every customer one by one.
    pub fn is_fatal(&self) -> bool {
        matches!(self, ApiError::Auth(_))
    }
}

/// What to do with an HTTP answer, from its status and Partner Center's error code alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A 2xx: read the body.
    Answer,
    /// Transient (408, 429, 500, 502, 503, 504): the same request again, after a pause.
    Retry,
    /// 401 without a more specific code: a fresh token, then once more.
    Reauthenticate,
    /// No customer can succeed (MFA required, wrong audience): the pass stops.
    Fatal,
    /// This request will not succeed as it stands (3xx, 4xx, other 5xx): the customer's error.
    CustomerError,
}

/// The pure decision behind every answer; the client maps it to waits and error variants.
pub fn verdict(status: u16, code: &str) -> Verdict {
    match status {
        200..=299 => Verdict::Answer,
        401 if code == "900421" || code == "900420" => Verdict::Fatal,
        401 => Verdict::Reauthenticate,
        408 | 429 | 500 | 502 | 503 | 504 => Verdict::Retry,
        _ => Verdict::CustomerError,
    }
}

/// Partner Center's error body in all the shapes it comes in: `{"code": 20002 | "20002",
/// "description": ...}`, the 429 shape `{"statusCode": 429, "message": ...}`, or anything else.
pub fn parse_error_body(body: &[u8]) -> (Option<String>, Option<String>) {
    let body = super::models::strip_bom(body);
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(body)
    else {
        let text = String::from_utf8_lossy(body).trim().to_string();
        let text: String = text.chars().take(200).collect();
        return (None, (!text.is_empty()).then_some(text));
    };
    let code = match map.get("code").or_else(|| map.get("statusCode")) {
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    let description = ["description", "message", "error_description"]
        .iter()
        .find_map(|k| map.get(*k).and_then(|v| v.as_str()))
        .map(str::to_string);
    (code, description)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_answer_has_one_verdict() {
        use Verdict::*;
        let table: &[(u16, &str, Verdict)] = &[
            (200, "", Answer),
            (204, "", Answer),
            (301, "", CustomerError),
            (302, "", CustomerError),
            (307, "", CustomerError),
            (400, "900118", CustomerError),
            (400, "", CustomerError),
            (401, "", Reauthenticate),
            (401, "900401", Reauthenticate),
            (401, "900421", Fatal),
            (401, "900420", Fatal),
            (403, "20002", CustomerError),
            (403, "900403", CustomerError),
            (404, "1000", CustomerError),
            (408, "", Retry),
            (409, "", CustomerError),
            (429, "429", Retry),
            (500, "", Retry),
            (501, "", CustomerError),
            (502, "", Retry),
            (503, "", Retry),
            (504, "", Retry),
            (505, "", CustomerError),
        ];
        for (status, code, want) in table {
            assert_eq!(verdict(*status, code), *want, "{status} {code:?}");
        }
    }

    #[test]
    fn error_bodies_parse_in_every_shape() {
        let (c, d) = parse_error_body(br#"{"code": 20002, "description": "no relationship", "data": [], "source": "PartnerFD"}"#);
        assert_eq!(
            (c.as_deref(), d.as_deref()),
            (Some("20002"), Some("no relationship"))
        );
        let (c, _) = parse_error_body(br#"{"code": "900118", "description": "bad id"}"#);
        assert_eq!(c.as_deref(), Some("900118"));
        let (c, d) = parse_error_body(
            br#"{"statusCode":429,"message":"Rate limit is exceeded. Try again in 57 seconds."}"#,
        );
        assert_eq!(c.as_deref(), Some("429"));
        assert!(d.is_some_and(|d| d.contains("57 seconds")));
        assert_eq!(parse_error_body(b""), (None, None));
        assert_eq!(
            parse_error_body(b"\xEF\xBB\xBF{\"code\":1000}")
                .0
                .as_deref(),
            Some("1000")
        );
        let (c, d) = parse_error_body(b"<html>502 Bad Gateway</html>");
        assert_eq!(c, None);
        assert_eq!(d.as_deref(), Some("<html>502 Bad Gateway</html>"));
    }
}
