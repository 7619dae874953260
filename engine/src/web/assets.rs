//! The web app, embedded at compile time from `web/dist/` (built with `npm run build` in `web/`
//! and committed, so building the gateway needs no Node.js).
//!
//! Bodies are `'static` and shared by every request, never copied. Each is also gzipped once, on
//! a thread of its own at start (app.js, 6.5 MB with the RDP client's WebAssembly, becomes about
//! 2.4 MB): until that is done, or for a client that does not accept gzip, the plain body is sent.

use std::sync::OnceLock;

pub struct Asset {
    pub body: &'static [u8],
    /// The gzipped body, once it is ready.
    pub gzip: Option<&'static [u8]>,
    pub content_type: &'static str,
    /// Content hash, computed once per process.
    pub etag: &'static str,
}

struct Embedded {
    path: &'static str,
    body: &'static [u8],
    content_type: &'static str,
    /// Served gzipped to clients that take it. Only scripts and styles under /assets/: an HTML
    /// document is where a BREACH attack looks for secrets next to reflected input, so no
    /// document is ever compressed (testssl checks `/`), nor is any API answer.
    compress: bool,
}

const EMBEDDED: [Embedded; 3] = [
    Embedded {
        path: "/index.html",
        body: include_bytes!("../../../web/dist/index.html"),
        content_type: "text/html; charset=utf-8",
        compress: false,
    },
    Embedded {
        path: "/assets/app.js",
        body: include_bytes!("../../../web/dist/app.js"),
        content_type: "text/javascript; charset=utf-8",
        compress: true,
    },
    Embedded {
        path: "/assets/app.css",
        body: include_bytes!("../../../web/dist/app.css"),
        content_type: "text/css; charset=utf-8",
        compress: true,
    },
];

static TAGS: [OnceLock<String>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
static GZIPPED: [OnceLock<Box<[u8]>>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];

/// The asset served for `path`, if any. `/` is the app's page.
pub fn get(path: &str) -> Option<Asset> {
    let path = if path == "/" || path == "/device" {
        "/index.html"
    } else {
        path
    };
    let i = EMBEDDED.iter().position(|e| e.path == path)?;
    let e = &EMBEDDED[i];
    Some(Asset {
        body: e.body,
        gzip: GZIPPED[i].get().map(|b| &**b),
        content_type: e.content_type,
        etag: TAGS[i].get_or_init(|| {
            use sha2::{Digest, Sha256};
            Sha256::digest(e.body)[..12]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        }),
    })
}

/// Gzips every asset once, on a thread of its own (never on a core): call once at start.
pub fn compress_in_background() {
    static STARTED: OnceLock<()> = OnceLock::new();
    if STARTED.set(()).is_err() {
        return;
    }
    let spawned = std::thread::Builder::new().name("assets-gzip".into()).spawn(|| {
        for (e, cell) in EMBEDDED.iter().zip(&GZIPPED).filter(|(e, _)| e.compress) {
            match gzip(e.body) {
                Ok(compressed) if compressed.len() < e.body.len() => {
                    let _ = cell.set(compressed.into_boxed_slice());
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(asset = e.path, "cannot compress: {err}"),
            }
        }
    });
    if let Err(err) = spawned {
        tracing::warn!("web assets are served uncompressed: {err}");
    }
}

fn gzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut out = flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 2), flate2::Compression::default());
    out.write_all(body)?;
    out.finish()
}

/// Whether an `Accept-Encoding` value accepts gzip (RFC 9110 12.5.3: `gzip`, `x-gzip` or `*`, and
/// not with `q=0`).
pub fn accepts_gzip(accept_encoding: &str) -> bool {
    let mut gzip = None;
    let mut any = None;
    for item in accept_encoding.split(',') {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q_zero = parts.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .or_else(|| p.trim().strip_prefix("Q="))
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q == 0.0)
        });
        match coding.as_str() {
            "gzip" | "x-gzip" => gzip = Some(!q_zero),
            "*" => any = Some(!q_zero),
            _ => {}
        }
    }
    gzip.or(any).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_encoding() {
        for yes in [
            "gzip",
            "gzip, deflate, br",
            "br;q=1.0, gzip;q=0.8",
            "*",
            "x-gzip",
            "GZIP",
        ] {
            assert!(accepts_gzip(yes), "{yes}");
        }
        for no in [
            "",
            "identity",
            "br",
            "gzip;q=0",
            "gzip; q=0.0, br",
            "*;q=0",
            "*, gzip;q=0",
        ] {
            assert!(!accepts_gzip(no), "{no}");
        }
    }

    #[test]
    fn gzipped_assets_decompress_to_the_originals() {
        use std::io::Read;
        let body = EMBEDDED[0].body;
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gzip(body).unwrap()[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, body);
    }
}
