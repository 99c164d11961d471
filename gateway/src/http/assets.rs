//! The browser files, compiled into the binary: the widget (`/widget.js` is the shared
//! protocol module followed by the widget), the operator console and the demo page.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const PROTOCOL_JS: &str = include_str!("../../../widget-js/protocol.js");
const WIDGET_JS: &str = concat!(
    include_str!("../../../widget-js/protocol.js"),
    "\n",
    include_str!("../../../widget-js/widget.js")
);
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
                let mut r = asset(WIDGET_JS, "text/javascript; charset=utf-8");
                // Pages on other origins embed the widget.
                r.headers_mut().insert(
                    header::ACCESS_CONTROL_ALLOW_ORIGIN,
                    HeaderValue::from_static("*"),
                );
                r
            }),
        )
}
