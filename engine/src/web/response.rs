//! The web app's responses: every one carries the same security headers, and a body is sent as
//! it is (embedded assets are shared, never copied per request; files are streamed).

use portcullis_protocols::http;

pub const JSON: &str = "application/json";

/// Headers on every answer of the web app.
const SECURITY_HEADERS: [(&str, &str); 5] = [
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Strict-Transport-Security", "max-age=31536000"),
    (
        "Content-Security-Policy",
        "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self' 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'",
    ),
];

pub enum Body {
    Empty,
    /// An embedded asset, shared by every request.
    Static(&'static [u8]),
    Owned(Vec<u8>),
    /// A file, streamed from the files pool in chunks.
    File {
        file: std::fs::File,
        len: u64,
    },
}

impl Body {
    pub fn len(&self) -> u64 {
        match self {
            Body::Empty => 0,
            Body::Static(b) => b.len() as u64,
            Body::Owned(b) => b.len() as u64,
            Body::File { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Body,
    /// Why, for a refusal: what the audit log records when it is one.
    pub reason: Option<String>,
}

impl Response {
    pub fn json(status: u16, value: serde_json::Value) -> Response {
        Response {
            status,
            content_type: JSON,
            headers: Vec::new(),
            body: Body::Owned(value.to_string().into_bytes()),
            reason: None,
        }
    }

    pub fn error(status: u16, message: &str) -> Response {
        Response {
            status,
            content_type: JSON,
            headers: Vec::new(),
            body: Body::Owned(portcullis_core::request::json_error_body(message).into_bytes()),
            reason: Some(message.to_owned()),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: String) -> Response {
        self.headers.push((name, value));
        self
    }

    /// The response head, with the security headers.
    pub fn head(&self) -> Vec<u8> {
        let extra: Vec<(&str, &str)> = self.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        head(self.status, self.content_type, self.body.len() as usize, &extra)
    }
}

/// A response head of the web app: `extra` headers plus the security headers.
pub fn head(status: u16, content_type: &str, content_length: usize, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut headers: Vec<(&str, &str)> = SECURITY_HEADERS.to_vec();
    headers.extend_from_slice(extra);
    http::response_head(status, content_type, content_length, &headers)
}
