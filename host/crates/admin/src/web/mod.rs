//! The operator web page, served on the admin listener at `/`: one HTML file, three scripts
//! (`app.js`; the catalog view's `catalog.js` and `destination.js`), one stylesheet and an icon,
//! compiled into the binary (no build toolchain, nothing fetched at run time).
//!
//! The page holds no data, so loading it needs no token; its script asks for the admin token,
//! keeps it in `sessionStorage` and sends it as `Authorization: Bearer` on every API call. Never
//! a cookie: a cross-site request then carries no credentials, and the API refuses foreign
//! `Origin`s anyway (`auth`). The headers below keep the page from running anything but its
//! own script and from being framed.

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::get;

const INDEX_HTML: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const CATALOG_JS: &str = include_str!("catalog.js");
const DESTINATION_JS: &str = include_str!("destination.js");
const APP_CSS: &str = include_str!("app.css");
const FAVICON: &str = include_str!("favicon.svg");

/// Only this origin's files and API; no inline script or style, no plugins, no framing, no
/// `<base>` tricks, and forms post nowhere (the token form is handled by the script).
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// The page's routes. Merge them outside the API's authorization layer: the files are public.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/catalog.js",
            get(|| async { asset("text/javascript; charset=utf-8", CATALOG_JS) }),
        )
        .route(
            "/destination.js",
            get(|| async { asset("text/javascript; charset=utf-8", DESTINATION_JS) }),
        )
        .route(
            "/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        // Browsers ask for an icon by themselves; without one they would meet the API's 401.
        .route(
            "/favicon.svg",
            get(|| async { asset("image/svg+xml", FAVICON) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    let headers: [(HeaderName, HeaderValue); 7] = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        // The files change with the binary; a stale script against a newer API helps no one.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (
            HeaderName::from_static("cross-origin-resource-policy"),
            HeaderValue::from_static("same-origin"),
        ),
    ];
    (headers, body)
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn serves_the_page_with_strict_headers() {
        for (path, kind) in [
            ("/", "text/html"),
            ("/app.js", "text/javascript"),
            ("/catalog.js", "text/javascript"),
            ("/destination.js", "text/javascript"),
            ("/app.css", "text/css"),
        ] {
            let resp = router::<()>()
                .oneshot(Request::get(path).body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "{path}");
            let h = resp.headers();
            assert!(
                h[header::CONTENT_TYPE].to_str().unwrap().starts_with(kind),
                "{path}"
            );
            let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
            assert!(csp.starts_with("default-src 'self'"), "{csp}");
            assert!(!csp.contains("unsafe"), "{csp}");
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
        }
    }

    /// The page's markup never runs inline code and its script never parses data as HTML.
    #[test]
    fn no_inline_script_and_no_html_sinks() {
        assert!(
            !INDEX_HTML.contains("<script>"),
            "inline script in index.html"
        );
        let inline_handler = INDEX_HTML.match_indices(" on").any(|(i, _)| {
            let rest = &INDEX_HTML[i + 3..];
            let name_len = rest.find(|c: char| !c.is_ascii_lowercase()).unwrap_or(0);
            name_len > 0 && rest[name_len..].starts_with('=')
        });
        assert!(!inline_handler, "inline event handler in index.html");
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            for (name, script) in [
                ("app.js", APP_JS),
                ("catalog.js", CATALOG_JS),
                ("destination.js", DESTINATION_JS),
            ] {
                assert!(!script.contains(sink), "{name} uses {sink}");
            }
        }
    }
}
