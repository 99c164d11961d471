//! The browser files, compiled into the binary: the widget (`/widget.js` is the shared
//! protocol module followed by the widget), the operator console and the demo page.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::LazyLock;

const PROTOCOL_JS: &str = include_str!("../../../widget-js/protocol.js");
const WIDGET_JS: &str = concat!(
    include_str!("../../../widget-js/protocol.js"),
    "\n",
    include_str!("../../../widget-js/widget.js")
);
/// `/widget.js` as served: the source without its comment lines (the `/*!` headers, which
/// say how to embed it, stay). Every page with the widget downloads it, and the comments,
/// written for whoever reads the source, are a sixth of it gzipped.
static WIDGET_SERVED: LazyLock<String> = LazyLock::new(|| strip_comment_lines(WIDGET_JS));

/// Drops the lines that are only a `//` comment or part of a `/* … */` block (not `/*!`).
/// Lines with code are kept whole, so strings and template literals are never cut; the
/// sources keep their comments on lines of their own (the browser tests check the result).
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
        out.push_str(line);
        out.push('\n');
    }
    out
}

const CONSOLE_HTML: &str = include_str!("../../../widget-js/console.html");
const CONSOLE_JS: &str = include_str!("../../../widget-js/console.js");
const DEMO_HTML: &str = include_str!("../../../widget-js/demo.html");

fn asset(body: &'static str, ctype: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// Routes for the static files.
pub fn router() -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { asset(DEMO_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/console",
            get(|| async { asset(CONSOLE_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/console.js",
            get(|| async { asset(CONSOLE_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/protocol.js",
            get(|| async { asset(PROTOCOL_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/widget.js",
            get(|| async {
                let mut r = asset(&WIDGET_SERVED, "text/javascript; charset=utf-8");
                // Pages on other origins embed the widget.
                r.headers_mut().insert(
                    header::ACCESS_CONTROL_ALLOW_ORIGIN,
                    HeaderValue::from_static("*"),
                );
                r
            }),
        )
}

#[cfg(test)]
mod tests {
    use super::strip_comment_lines;

    #[test]
    fn comment_lines_go_code_and_headers_stay() {
        let src = "/*! keep: embed me\n * with this tag\n */\n// a line comment\nlet a = 1; // stays\n  /** doc */\n  /* multi\n   * line\n   */\n/* x */ let b = 2;\nconst u = 'http://x//y';\n";
        assert_eq!(
            strip_comment_lines(src),
            "/*! keep: embed me\n * with this tag\n */\nlet a = 1; // stays\n/* x */ let b = 2;\nconst u = 'http://x//y';\n"
        );
    }
}
