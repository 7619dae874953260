//! The web app, embedded at compile time from `web/dist/` (built with `npm run build` in `web/`
//! and committed, so building the gateway needs no Node.js).

pub struct Asset {
    pub body: &'static [u8],
    pub content_type: &'static str,
    /// Content hash, computed once per process.
    pub etag: &'static str,
}

fn etag_of(body: &'static [u8], cell: &'static std::sync::OnceLock<String>) -> &'static str {
    cell.get_or_init(|| {
        use sha2::{Digest, Sha256};
        Sha256::digest(body)[..12].iter().map(|b| format!("{b:02x}")).collect()
    })
}

/// The asset served for `path`, if any. `/` is the app's page.
pub fn get(path: &str) -> Option<Asset> {
    use std::sync::OnceLock;
    static TAGS: [OnceLock<String>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let (body, content_type, tag): (&'static [u8], _, _) = match path {
        "/" | "/index.html" => (
            include_bytes!("../../../web/dist/index.html"),
            "text/html; charset=utf-8",
            &TAGS[0],
        ),
        "/assets/app.js" => (
            include_bytes!("../../../web/dist/app.js"),
            "text/javascript; charset=utf-8",
            &TAGS[1],
        ),
        "/assets/app.css" => (
            include_bytes!("../../../web/dist/app.css"),
            "text/css; charset=utf-8",
            &TAGS[2],
        ),
        _ => return None,
    };
    Some(Asset {
        body,
        content_type,
        etag: etag_of(body, tag),
    })
}
