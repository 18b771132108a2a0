//! The web chat page: `GET /` (the HTML), `/app.js`, `/app.css` and
//! `/favicon.svg`, embedded in the binary (`include_bytes!` of
//! `crates/chat-server/assets/`, which `npm run build` in `web/page`
//! writes and a test keeps equal to its source), so running the server
//! needs no Node and no files beside it. The page speaks to `/v1/ws` on
//! the host that served it (`endpoint::websocket`).
//!
//! The operator's view ([`operator_routes`]): `GET /admin/`, with
//! `operator.js` and `operator.css` (`crates/chat-server/assets/admin/`,
//! written by hand: no build step). It holds no data; it asks for the
//! admin credentials and reads the admin and server API endpoints with
//! them, as any other client of those would.
//!
//! Every answer carries a strict `Content-Security-Policy` (scripts,
//! styles and images from this origin only, no inline code, connections
//! only to this origin and its `ws://`/`wss://` twin, no framing, no
//! `<base>`, no form posts), `X-Content-Type-Options: nosniff`,
//! `Referrer-Policy: no-referrer`, and `Cache-Control: no-cache` with an
//! `ETag`: the names are not fingerprinted, so a browser revalidates each
//! time and gets `304 Not Modified` while the binary is the same.

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha1::{Digest, Sha1};

/// One embedded file and how it is served.
struct Asset {
    /// The path it is served at.
    path: &'static str,
    /// Its `Content-Type`.
    content_type: &'static str,
    /// Its bytes, embedded at build time.
    body: &'static [u8],
}

/// The page's files.
const ASSETS: [Asset; 4] = [
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../../assets/index.html"),
    },
    Asset {
        path: "/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../assets/app.js"),
    },
    Asset {
        path: "/app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../assets/app.css"),
    },
    Asset {
        path: "/favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../../assets/favicon.svg"),
    },
];

/// The policy without its `connect-src`, which names the request's host.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The operator's view's files.
const OPERATOR_ASSETS: [Asset; 4] = [
    Asset {
        path: "/admin/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../../assets/admin/index.html"),
    },
    Asset {
        path: "/admin/operator.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../assets/admin/operator.js"),
    },
    Asset {
        path: "/admin/operator.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../assets/admin/operator.css"),
    },
    Asset {
        path: "/admin/favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../../assets/favicon.svg"),
    },
];

/// The page's routes, for the main listener.
pub fn routes() -> Router {
    serve_all(&ASSETS)
}

/// The operator's view's routes, for wherever the admin endpoints are.
pub fn operator_routes() -> Router {
    // `/admin` is sent on to the view's one address.
    serve_all(&OPERATOR_ASSETS).route(
        "/admin",
        get(|| async { axum::response::Redirect::permanent("/admin/") }),
    )
}

/// A route per file of `assets`.
fn serve_all(assets: &'static [Asset]) -> Router {
    assets.iter().fold(Router::new(), |router, asset| {
        let etag = etag(asset.body);
        router.route(
            asset.path,
            get(move |headers: HeaderMap| async move { serve(asset, &etag, &headers) }),
        )
    })
}

/// The answer for `asset`: the file, or 304 if the browser has this version.
fn serve(asset: &Asset, etag: &HeaderValue, request: &HeaderMap) -> Response {
    let host = request.get(header::HOST).and_then(|h| h.to_str().ok());
    let mut headers = HeaderMap::new();
    headers.insert(header::ETAG, etag.clone());
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::CONTENT_SECURITY_POLICY, policy(host));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if fresh(request, etag) {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    (headers, asset.body).into_response()
}

/// The policy for a page served to `host`: connections to this origin
/// only. `'self'` covers `ws:`/`wss:` to the same host in CSP level 3; the
/// explicit `ws://host wss://host` are for browsers that predate it. A
/// `Host` that is not a plain host name or address (and port) is left out.
fn policy(host: Option<&str>) -> HeaderValue {
    let connect = match host.filter(|h| plain_host(h)) {
        Some(h) => format!("connect-src 'self' ws://{h} wss://{h}"),
        None => "connect-src 'self'".to_string(),
    };
    HeaderValue::from_str(&format!("{CSP}; {connect}"))
        .unwrap_or_else(|_| HeaderValue::from_static(CSP))
}

/// Whether `host` is a host name, IPv4 or bracketed IPv6 address, with an
/// optional port: nothing that could end or extend the policy.
fn plain_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
}

/// Whether the request's `If-None-Match` names this version.
fn fresh(request: &HeaderMap, etag: &HeaderValue) -> bool {
    let Some(wanted) = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let ours = etag.to_str().unwrap_or_default();
    wanted
        .split(',')
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == "*" || tag == ours)
}

/// A strong `ETag` for `body`: its SHA-1, hex, quoted.
fn etag(body: &[u8]) -> HeaderValue {
    let digest = Sha1::digest(body);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    HeaderValue::from_str(&format!("\"{hex}\"")).expect("hex is a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_names_only_a_plain_host() {
        let with = policy(Some("127.0.0.1:5000"));
        assert!(
            with.to_str()
                .unwrap()
                .ends_with("connect-src 'self' ws://127.0.0.1:5000 wss://127.0.0.1:5000")
        );
        let ipv6 = policy(Some("[::1]:5000"));
        assert!(ipv6.to_str().unwrap().contains("ws://[::1]:5000"));
        for hostile in ["evil; script-src *", "a b", "x'y", ""] {
            let p = policy(Some(hostile));
            assert!(
                p.to_str().unwrap().ends_with("connect-src 'self'"),
                "{hostile}"
            );
        }
        assert!(
            policy(None)
                .to_str()
                .unwrap()
                .starts_with("default-src 'none'")
        );
    }

    #[test]
    fn if_none_match_matches_the_etag_or_a_star() {
        let tag = etag(b"page");
        let ask = |value: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::IF_NONE_MATCH, HeaderValue::from_str(value).unwrap());
            fresh(&h, &tag)
        };
        assert!(ask(tag.to_str().unwrap()));
        assert!(ask(&format!("\"x\", W/{}", tag.to_str().unwrap())));
        assert!(ask("*"));
        assert!(!ask("\"other\""));
        assert!(!fresh(&HeaderMap::new(), &tag));
    }

    #[test]
    fn the_assets_are_embedded() {
        for asset in &ASSETS {
            assert!(!asset.body.is_empty(), "{} is empty", asset.path);
        }
        let html = std::str::from_utf8(ASSETS[0].body).unwrap();
        assert!(html.contains("/app.js") && html.contains("/app.css"));
    }
}
