//! The web app, embedded at compile time from `web/dist/` (built with `npm run build` in `web/`
//! and committed, so building the gateway needs no Node.js).

pub struct Asset {
    pub body: &'static [u8],
    pub content_type: &'static str,
}

/// The asset served for `path`, if any. `/` is the app's page.
pub fn get(path: &str) -> Option<Asset> {
    let (body, content_type): (&'static [u8], _) = match path {
        "/" | "/index.html" => (
            include_bytes!("../../../web/dist/index.html"),
            "text/html; charset=utf-8",
        ),
        "/assets/app.js" => (
            include_bytes!("../../../web/dist/app.js"),
            "text/javascript; charset=utf-8",
        ),
        "/assets/app.css" => (include_bytes!("../../../web/dist/app.css"), "text/css; charset=utf-8"),
        _ => return None,
    };
    Some(Asset { body, content_type })
}
