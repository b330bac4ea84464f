//! The HTTP endpoint's request rules (`weave_agent::http::route`).

use weave_agent::http::route::{Format, Refusal, Route, route};

/// Input: text (invalid UTF-8 replaced), four lines: method, path, query,
/// `Accept` header (a missing line is a missing part). Only GET and HEAD
/// get an answer; a route with a query was given exactly `format=text` or
/// `format=json`; a refusal quotes the client's input short and without
/// control characters (it is sent back).
pub fn http_route(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(4, '\n');
    let method = parts.next().unwrap_or_default();
    let path = parts.next().unwrap_or_default();
    let query = parts.next();
    let accept = parts.next();
    let result = route(method, path, query, accept);
    if method != "GET" && method != "HEAD" {
        assert_eq!(result, Err(Refusal::Method), "{method:?}");
        return;
    }
    let query = query.unwrap_or_default();
    match result {
        Ok(Route::Status(_, format)) => {
            if !query.is_empty() {
                let want = match query {
                    "format=text" => Format::Text,
                    "format=json" => Format::Json,
                    _ => panic!("query {query:?} accepted"),
                };
                assert_eq!(format, want);
            }
        }
        Ok(other) => assert!(query.is_empty(), "{other:?} with query {query:?}"),
        Err(Refusal::BadQuery(why)) => {
            assert!(!query.is_empty());
            assert!(why.len() < 200, "{why:?}");
            assert!(!why.chars().any(char::is_control), "{why:?}");
        }
        Err(Refusal::NotFound) => {}
        Err(Refusal::Method) => panic!("{method:?} refused"),
    }
}

pub(crate) fn route_seeds() -> Vec<(&'static str, Vec<u8>)> {
    [
        ("status", "GET\n/status"),
        ("section-json", "GET\n/status/peers\nformat=json"),
        ("accept-json", "HEAD\n/status/ipam\n\napplication/json"),
        ("metrics", "GET\n/metrics\n"),
        ("bad-query", "GET\n/status\nformat=xml&x=1"),
        ("post", "POST\n/report"),
    ]
    .into_iter()
    .map(|(n, t)| (n, t.as_bytes().to_vec()))
    .collect()
}
