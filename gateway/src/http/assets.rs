//! The browser files, compiled into the binary: the widget (`/widget.js` is the shared
//! protocol module followed by the widget), the operator console (an ES module, its screens
//! and its styles) and the demo page.
//!
//! Each is sent compressed when the browser takes it (brotli, else gzip, by `Accept-Encoding`
//! and its q-values), with a strong `ETag`, `Cache-Control: no-cache` and
//! `Vary: Accept-Encoding`: a browser revalidates every file on every page view, and one it has
//! already gets `304 Not Modified` and no body. Customers embed `/widget.js` at a fixed URL, so
//! it must never be cached without asking. A file is compressed once, at its first request.

use std::borrow::Cow;
use std::io::Write;
use std::sync::{LazyLock, OnceLock};

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use sha2::{Digest, Sha256};

const WIDGET_JS: &str = concat!(
    include_str!("../../../widget-js/protocol.js"),
    "\n",
    include_str!("../../../widget-js/widget.js")
);

/// `/widget.js` is served without its comment lines (the `/*!` headers, which say how to
/// embed it, stay) and without the lines' indentation: every page with the widget downloads
/// it, and the comments, written for whoever reads the source, are a sixth of it gzipped, the
/// indentation another twentieth.
///
/// Drops the lines that are only a `//` comment or part of a `/* … */` block (not `/*!`), and
/// the whitespace each kept line starts with. Nothing after a line's start is touched, so no
/// string is cut; the sources keep their comments on lines of their own, and their
/// multi-line template literals (the widget's CSS) mean the same without indentation (the
/// browser tests check the result).
fn strip_comment_lines(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut in_block = false;
    for line in src.lines() {
        let t = line.trim_start();
        if in_block {
            in_block = !t.contains("*/");
            continue;
        }
        if t.starts_with("//") {
            continue;
        }
        if t.starts_with("/*") && !t.starts_with("/*!") {
            match t.find("*/") {
                None => {
                    in_block = true;
                    continue;
                }
                Some(end) if t[end + 2..].trim().is_empty() => continue,
                // Code after the comment: the line stays.
                Some(_) => {}
            }
        }
        out.push_str(line.trim_start());
        out.push('\n');
    }
    out
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// The table's row for the file `$file` of `widget-js/`, compiled in, served at `$path`.
macro_rules! served {
    ($path:literal, $file:literal, $content_type:expr) => {
        (
            $path,
            include_str!(concat!("../../../widget-js/", $file)),
            $content_type,
        )
    };
}

/// Every static file but `/widget.js`, which is built from two of them: path, body, type.
/// The console is an ES module (`/console.js`) importing its screens from `/console/`.
const FILES: &[(&str, &str, &str)] = &[
    served!("/", "demo.html", HTML),
    served!("/console", "console.html", HTML),
    served!("/console/console.css", "console/console.css", CSS),
    served!("/console.js", "console.js", JS),
    served!("/console/core.js", "console/core.js", JS),
    served!("/console/connection.js", "console/connection.js", JS),
    served!("/console/settings.js", "console/settings.js", JS),
    served!("/console/queue.js", "console/queue.js", JS),
    served!("/console/conversation.js", "console/conversation.js", JS),
    served!("/console/composer.js", "console/composer.js", JS),
    served!("/console/actions.js", "console/actions.js", JS),
    served!("/console/visitor.js", "console/visitor.js", JS),
    served!("/console/supervisor.js", "console/supervisor.js", JS),
    served!("/console/admin.js", "console/admin.js", JS),
    served!("/protocol.js", "protocol.js", JS),
];

/// One static file: where it is served, what it holds, its type, whether pages on other
/// origins may read it (the widget, which customers' pages embed), and its encodings, made
/// at its first request.
struct Asset {
    path: &'static str,
    body: Cow<'static, str>,
    content_type: &'static str,
    cross_origin: bool,
    encoded: OnceLock<Encoded>,
}

/// The table of every static file, `/widget.js` first.
static ASSETS: LazyLock<Vec<Asset>> = LazyLock::new(|| {
    let widget = Asset {
        path: "/widget.js",
        body: Cow::Owned(strip_comment_lines(WIDGET_JS)),
        content_type: JS,
        cross_origin: true,
        encoded: OnceLock::new(),
    };
    let files = FILES.iter().map(|&(path, body, content_type)| Asset {
        path,
        body: Cow::Borrowed(body),
        content_type,
        cross_origin: false,
        encoded: OnceLock::new(),
    });
    std::iter::once(widget).chain(files).collect()
});

/// A content coding the gateway sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Coding {
    Identity,
    Gzip,
    Br,
}

/// One file's bytes as sent in each coding, each with its own strong ETag (a representation
/// is the bytes on the wire, so gzip and brotli are not the same one as the plain file).
/// A coding that would not make the file smaller is left out.
struct Encoded {
    identity: Variant,
    gzip: Option<Variant>,
    br: Option<Variant>,
}

struct Variant {
    bytes: Bytes,
    etag: HeaderValue,
}

impl Encoded {
    fn new(body: &[u8]) -> Encoded {
        // 128 bits of SHA-256 of the file: the same on every node and every restart.
        let hash: String = Sha256::digest(body)[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let variant = |bytes: Vec<u8>, suffix: &str| Variant {
            bytes: Bytes::from(bytes),
            etag: HeaderValue::from_str(&format!("\"{hash}{suffix}\""))
                .expect("hex digits make a valid header value"),
        };
        let smaller = |bytes: Vec<u8>| (bytes.len() < body.len()).then_some(bytes);
        Encoded {
            identity: variant(body.to_vec(), ""),
            gzip: smaller(gzip(body)).map(|b| variant(b, "-gz")),
            br: smaller(brotli(body)).map(|b| variant(b, "-br")),
        }
    }

    /// The variant for the negotiated coding, or the plain file when that one is left out.
    fn get(&self, coding: Coding) -> (Coding, &Variant) {
        match (coding, &self.gzip, &self.br) {
            (Coding::Br, _, Some(v)) => (Coding::Br, v),
            (Coding::Gzip, Some(v), _) => (Coding::Gzip, v),
            _ => (Coding::Identity, &self.identity),
        }
    }
}

/// Gzip at the best level: the work is done once per file and process.
fn gzip(body: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(body).expect("writing to a Vec cannot fail");
    enc.finish().expect("writing to a Vec cannot fail")
}

/// Brotli at its best quality (11) with a 4 MiB window (22): once per file and process.
fn brotli(body: &[u8]) -> Vec<u8> {
    let mut enc = brotli::CompressorWriter::new(Vec::new(), 4096, 11, 22);
    enc.write_all(body).expect("writing to a Vec cannot fail");
    enc.into_inner()
}

/// The coding to send for the request's `Accept-Encoding`: brotli when the client takes it at
/// least as gladly as gzip, else gzip, else none. A coding with `q=0` (or not listed, and no
/// `*` to cover it) is refused; a malformed q-value makes its entry count as not given.
fn negotiate(headers: &HeaderMap) -> Coding {
    let (mut br, mut gzip, mut any) = (None, None, None);
    let values = headers.get_all(header::ACCEPT_ENCODING).iter();
    for item in values
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
    {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("").trim();
        let mut q = Some(1000);
        for param in parts {
            if let Some((key, value)) = param.split_once('=') {
                if key.trim().eq_ignore_ascii_case("q") {
                    q = qvalue(value.trim());
                }
            }
        }
        let Some(q) = q else { continue };
        if name.eq_ignore_ascii_case("br") {
            br = Some(q);
        } else if name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip") {
            gzip = Some(q);
        } else if name == "*" {
            any = Some(q);
        }
    }
    let br = br.or(any).unwrap_or(0);
    let gzip = gzip.or(any).unwrap_or(0);
    if br > 0 && br >= gzip {
        Coding::Br
    } else if gzip > 0 {
        Coding::Gzip
    } else {
        Coding::Identity
    }
}

/// A q-value (`0`, `0.5`, `1.000`…) in thousandths, or `None` when it is not one.
fn qvalue(s: &str) -> Option<u16> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = format!("{frac:0<3}").parse::<u16>().ok()?;
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// Whether the request's `If-None-Match` names this ETag, or is `*`. The comparison is the
/// weak one (`W/"x"` matches `"x"`), as RFC 9110 asks for `If-None-Match`.
fn not_modified(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let etag = etag.as_bytes();
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(|tag| tag.trim_ascii())
        .any(|tag| tag == b"*" || tag.strip_prefix(b"W/").unwrap_or(tag) == etag)
}

/// The answer to a GET (axum answers a HEAD with the same headers and no body).
fn respond(a: &Asset, req: &HeaderMap) -> Response {
    let encoded = a.encoded.get_or_init(|| Encoded::new(a.body.as_bytes()));
    let (coding, variant) = encoded.get(negotiate(req));
    let unchanged = not_modified(req, &variant.etag);
    let mut r = if unchanged {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        Response::new(Body::from(variant.bytes.clone()))
    };
    let h = r.headers_mut();
    h.insert(header::ETAG, variant.etag.clone());
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if a.cross_origin {
        // Pages on other origins embed the widget.
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
    }
    if !unchanged {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(a.content_type),
        );
        let name = match coding {
            Coding::Br => Some("br"),
            Coding::Gzip => Some("gzip"),
            Coding::Identity => None,
        };
        if let Some(name) = name {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(name));
        }
    }
    r
}

/// Routes for the static files.
pub fn router() -> Router {
    let mut r = Router::new();
    for a in ASSETS.iter() {
        r = r.route(
            a.path,
            get(move |req: HeaderMap| async move { respond(a, &req) }),
        );
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::header::{ACCEPT_ENCODING, IF_NONE_MATCH};
    use axum::http::HeaderName;
    use std::io::Read;

    #[test]
    fn comment_lines_and_indentation_go_code_and_headers_stay() {
        let src = "/*! keep: embed me\n * with this tag\n */\n// a line comment\nlet a = 1; // stays\n  /** doc */\n  /* multi\n   * line\n   */\n/* x */ let b = 2;\nconst u = 'http://x//y';\n";
        assert_eq!(
            strip_comment_lines(src),
            "/*! keep: embed me\n* with this tag\n*/\nlet a = 1; // stays\n/* x */ let b = 2;\nconst u = 'http://x//y';\n"
        );
    }

    fn request(fields: &[(HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in fields {
            h.append(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        h
    }

    fn asset(path: &str) -> &'static Asset {
        ASSETS.iter().find(|a| a.path == path).unwrap()
    }

    async fn body(r: Response) -> Vec<u8> {
        axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec()
    }

    #[test]
    fn negotiation_follows_accept_encoding_and_its_q_values() {
        use Coding::*;
        let cases: &[(&[&str], Coding)] = &[
            (&[], Identity),
            (&[""], Identity),
            (&["gzip, deflate, br, zstd"], Br),
            (&["gzip"], Gzip),
            (&["x-gzip"], Gzip),
            (&["deflate"], Identity),
            (&["identity"], Identity),
            // q=0 means "not acceptable".
            (&["br;q=0, gzip"], Gzip),
            (&["gzip;q=0, br;q=0"], Identity),
            (&["br;q=0.0"], Identity),
            // The client's preference wins; brotli on a tie.
            (&["br;q=0.5, gzip;q=0.8"], Gzip),
            (&["gzip;q=0.8, br;q=0.8"], Br),
            (&["BR ; Q=1.000"], Br),
            // `*` covers what is not listed, and only that.
            (&["*"], Br),
            (&["*;q=0"], Identity),
            (&["*, br;q=0"], Gzip),
            (&["gzip;q=0.2, *;q=0.5"], Br),
            // A malformed q-value: the entry counts as not given.
            (&["br;q=2, gzip;q=0.1"], Gzip),
            (&["br;q=abc"], Identity),
            (&["br;q=0.1234, gzip"], Gzip),
            // Several header lines are one list.
            (&["gzip", "br"], Br),
        ];
        for (values, want) in cases {
            let fields: Vec<_> = values.iter().map(|v| (ACCEPT_ENCODING, *v)).collect();
            assert_eq!(negotiate(&request(&fields)), *want, "{values:?}");
        }
    }

    #[test]
    fn q_values_are_read_by_the_rfc_grammar() {
        let cases = [
            ("0", Some(0)),
            ("0.", Some(0)),
            ("0.5", Some(500)),
            ("0.05", Some(50)),
            ("0.123", Some(123)),
            ("1", Some(1000)),
            ("1.000", Some(1000)),
            ("1.5", None),
            ("0.1234", None),
            ("2", None),
            ("", None),
            (".5", None),
            ("-0", None),
        ];
        for (s, want) in cases {
            assert_eq!(qvalue(s), want, "{s:?}");
        }
    }

    #[tokio::test]
    async fn every_file_decodes_back_to_its_bytes_in_every_coding() {
        for a in ASSETS.iter() {
            let plain = a.body.as_bytes();
            for (accept, coding) in [("br", Some("br")), ("gzip", Some("gzip")), ("", None)] {
                let r = respond(a, &request(&[(ACCEPT_ENCODING, accept)]));
                assert_eq!(r.status(), StatusCode::OK, "{} {accept}", a.path);
                let h = r.headers().clone();
                let got = h.get(header::CONTENT_ENCODING).map(|v| v.to_str().unwrap());
                assert_eq!(got, coding, "{} {accept}", a.path);
                assert_eq!(h[header::CONTENT_TYPE], a.content_type);
                assert_eq!(h[header::CACHE_CONTROL], "no-cache");
                assert_eq!(h[header::VARY], "accept-encoding");
                let etag = h[header::ETAG].to_str().unwrap();
                assert!(
                    etag.starts_with('"') && etag.ends_with('"'),
                    "strong: {etag}"
                );
                let sent = body(r).await;
                let mut decoded = Vec::new();
                match coding {
                    Some("br") => {
                        brotli::Decompressor::new(&sent[..], 4096)
                            .read_to_end(&mut decoded)
                            .unwrap();
                    }
                    Some(_) => {
                        flate2::read::GzDecoder::new(&sent[..])
                            .read_to_end(&mut decoded)
                            .unwrap();
                    }
                    None => decoded.clone_from(&sent),
                }
                assert!(decoded == plain, "{} {accept} decodes to the file", a.path);
                if coding.is_some() {
                    assert!(sent.len() < plain.len(), "{} {accept} is smaller", a.path);
                }
            }
        }
    }

    #[tokio::test]
    async fn a_known_etag_is_answered_304_without_a_body() {
        let widget = asset("/widget.js");
        let accept = || (ACCEPT_ENCODING, "gzip, deflate, br");
        let first = respond(widget, &request(&[accept()]));
        let etag = first.headers()[header::ETAG].to_str().unwrap().to_owned();
        let matching = [
            etag.clone(),
            format!("\"elsewhere\", {etag}"),
            format!("\"a\",W/{etag} , \"b\""),
            format!("W/{etag}"),
            "*".to_owned(),
        ];
        for inm in &matching {
            let r = respond(widget, &request(&[accept(), (IF_NONE_MATCH, inm)]));
            assert_eq!(r.status(), StatusCode::NOT_MODIFIED, "{inm}");
            let h = r.headers().clone();
            assert_eq!(h[header::ETAG], etag.as_str());
            assert_eq!(h[header::CACHE_CONTROL], "no-cache");
            assert_eq!(h[header::VARY], "accept-encoding");
            assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
            assert!(h.get(header::CONTENT_ENCODING).is_none());
            assert!(body(r).await.is_empty(), "{inm}");
        }
        // Several If-None-Match lines are one list.
        let lines = [(IF_NONE_MATCH, "\"x\""), (IF_NONE_MATCH, etag.as_str())];
        let r = respond(
            widget,
            &request(&[accept(), lines[0].clone(), lines[1].clone()]),
        );
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);

        // Another file's ETag, another coding's (the gzip form is another representation), a
        // stale one: the whole file.
        let gzip = respond(widget, &request(&[(ACCEPT_ENCODING, "gzip")]));
        let gzip_etag = gzip.headers()[header::ETAG].to_str().unwrap().to_owned();
        assert_ne!(gzip_etag, etag);
        let console = respond(asset("/console.js"), &request(&[accept()]));
        let console_etag = console.headers()[header::ETAG].to_str().unwrap().to_owned();
        for inm in [
            gzip_etag,
            console_etag,
            "\"0123\"".to_owned(),
            etag[..10].to_owned(),
        ] {
            let r = respond(widget, &request(&[accept(), (IF_NONE_MATCH, &inm)]));
            assert_eq!(r.status(), StatusCode::OK, "{inm}");
            assert!(!body(r).await.is_empty());
        }
    }

    #[test]
    fn files_are_compressed_once() {
        let a = asset("/console/core.js");
        let _ = respond(a, &HeaderMap::new());
        let first: *const Encoded = a.encoded.get().unwrap();
        let _ = respond(a, &request(&[(ACCEPT_ENCODING, "br")]));
        assert!(std::ptr::eq(first, a.encoded.get().unwrap()));
    }

    #[test]
    fn the_table_serves_every_console_file() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../widget-js/console");
        for entry in std::fs::read_dir(dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            let path = format!("/console/{name}");
            assert!(
                ASSETS.iter().any(|a| a.path == path),
                "{path} is not served"
            );
        }
    }
}
