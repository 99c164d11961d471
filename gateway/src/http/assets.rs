//! The browser files, compiled into the binary: the widget (`/widget.js` is the shared
//! protocol module followed by the widget), the operator console and the demo page.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::LazyLock;

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

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// One static file: where it is served, what it holds, its type, and whether pages on other
/// origins may read it (the widget, which customers' pages embed).
struct Asset {
    path: &'static str,
    body: &'static str,
    content_type: &'static str,
    cross_origin: bool,
}

/// The table's row for the file `$file` of `widget-js/`, compiled in, served at `$path`.
macro_rules! served {
    ($path:literal, $file:literal, $content_type:expr) => {
        Asset {
            path: $path,
            body: include_str!(concat!("../../../widget-js/", $file)),
            content_type: $content_type,
            cross_origin: false,
        }
    };
}

/// Every static file but `/widget.js`, which is built from two of them at first use. The
/// console is an ES module (`/console.js`) importing its screens from `/console/`.
const FILES: &[Asset] = &[
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
    served!("/protocol.js", "protocol.js", JS),
];

static WIDGET: LazyLock<Asset> = LazyLock::new(|| Asset {
    path: "/widget.js",
    body: WIDGET_SERVED.as_str(),
    content_type: JS,
    cross_origin: true,
});

fn respond(a: &Asset) -> Response {
    let mut r = a.body.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(a.content_type),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if a.cross_origin {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
    }
    r
}

/// Routes for the static files.
pub fn router() -> Router {
    let mut r = Router::new().route("/widget.js", get(|| async { respond(&WIDGET) }));
    for a in FILES {
        r = r.route(a.path, get(move || async move { respond(a) }));
    }
    r
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
