//! Which answer a request gets, decided from its method, path, query and
//! `Accept` header alone (no I/O), so every rule of the endpoint is a unit
//! test: GET and HEAD only, a fixed set of paths, one query parameter.

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// The topology page.
    Page,
    /// `weave status` or one of its sections, as text or JSON.
    Status(Option<Section>, Format),
    /// The whole snapshot as JSON (`weave report`).
    Report,
    /// Prometheus metrics.
    Metrics,
}

/// The sections of `weave status SECTION`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    Peers,
    Connections,
    Targets,
    Ipam,
    Dataplane,
    Dns,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// Why a request is refused: the status code and a line for the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 405: the endpoint is read-only.
    Method,
    /// 404.
    NotFound,
    /// 400, with what is wrong.
    BadQuery(String),
}

/// Longest query string looked at; anything longer is refused whole.
const MAX_QUERY: usize = 256;

pub fn route(
    method: &str,
    path: &str,
    query: Option<&str>,
    accept: Option<&str>,
) -> Result<Route, Refusal> {
    if method != "GET" && method != "HEAD" {
        return Err(Refusal::Method);
    }
    let section = match path {
        "/" | "/index.html" => return no_query(query).map(|()| Route::Page),
        "/report" => return no_query(query).map(|()| Route::Report),
        "/metrics" => return no_query(query).map(|()| Route::Metrics),
        "/status" => None,
        "/status/peers" => Some(Section::Peers),
        "/status/connections" => Some(Section::Connections),
        "/status/targets" => Some(Section::Targets),
        "/status/ipam" => Some(Section::Ipam),
        "/status/dataplane" => Some(Section::Dataplane),
        "/status/dns" => Some(Section::Dns),
        _ => return Err(Refusal::NotFound),
    };
    let format = match format_param(query)? {
        Some(f) => f,
        None if accept.is_some_and(wants_json) => Format::Json,
        None => Format::Text,
    };
    Ok(Route::Status(section, format))
}

/// `/`, `/report` and `/metrics` take no parameters: a query there is a
/// mistake worth telling (an empty one, `/report?`, is no query).
fn no_query(query: Option<&str>) -> Result<(), Refusal> {
    match query {
        None | Some("") => Ok(()),
        Some(q) => Err(Refusal::BadQuery(format!(
            "this path takes no query parameters (got \"{}\")",
            clip(q)
        ))),
    }
}

/// The one parameter of `/status*`: `format=text` or `format=json`, at most
/// once. Anything else is refused rather than ignored, so that a typo does
/// not silently give the other format.
fn format_param(query: Option<&str>) -> Result<Option<Format>, Refusal> {
    let Some(query) = query.filter(|q| !q.is_empty()) else {
        return Ok(None);
    };
    if query.len() > MAX_QUERY {
        return Err(Refusal::BadQuery(format!(
            "query longer than {MAX_QUERY} bytes"
        )));
    }
    let mut format = None;
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key != "format" {
            return Err(Refusal::BadQuery(format!(
                "unknown parameter \"{}\" (the only one is format=text|json)",
                clip(key)
            )));
        }
        let f = match value {
            "text" => Format::Text,
            "json" => Format::Json,
            _ => {
                return Err(Refusal::BadQuery(format!(
                    "format=\"{}\": expected text or json",
                    clip(value)
                )));
            }
        };
        if format.replace(f).is_some() {
            return Err(Refusal::BadQuery("format given twice".into()));
        }
    }
    Ok(format)
}

/// Does an `Accept` header prefer JSON? Only an explicit
/// `application/json` counts; browsers and curl (`*/*`) get text.
fn wants_json(accept: &str) -> bool {
    accept.split(',').any(|r| {
        r.split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
    })
}

/// What a refusal quotes of the client's input: short in bytes once
/// escaped, and printable ASCII (it is sent back). Escaping before
/// cutting matters: `{:?}` of 40 unusual characters is ten times longer.
fn clip(s: &str) -> String {
    const MAX_QUOTED: usize = 60;
    let mut quoted: String = s
        .chars()
        .flat_map(char::escape_default)
        .take(MAX_QUOTED)
        .collect();
    if quoted.len() == MAX_QUOTED {
        quoted.push_str("...");
    }
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str, query: Option<&str>) -> Result<Route, Refusal> {
        route("GET", path, query, None)
    }

    #[test]
    fn only_get_and_head_are_answered() {
        assert_eq!(
            route("HEAD", "/status", None, None),
            Ok(Route::Status(None, Format::Text))
        );
        for m in [
            "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "get",
        ] {
            assert_eq!(route(m, "/status", None, None), Err(Refusal::Method), "{m}");
            // Even for a path that does not exist: the method is checked first.
            assert_eq!(route(m, "/nope", None, None), Err(Refusal::Method), "{m}");
        }
    }

    #[test]
    fn paths() {
        assert_eq!(get("/", None), Ok(Route::Page));
        assert_eq!(get("/report", None), Ok(Route::Report));
        assert_eq!(get("/report", Some("")), Ok(Route::Report));
        assert_eq!(get("/metrics", None), Ok(Route::Metrics));
        assert_eq!(
            get("/status/ipam", None),
            Ok(Route::Status(Some(Section::Ipam), Format::Text))
        );
        assert_eq!(
            get("/status/dns", None),
            Ok(Route::Status(Some(Section::Dns), Format::Text))
        );
        for p in [
            "/status/",
            "/status/nope",
            "/statusx",
            "/metrics/",
            "//status",
            "/status/peers/x",
        ] {
            assert_eq!(get(p, None), Err(Refusal::NotFound), "{p}");
        }
    }

    #[test]
    fn format_by_query_or_accept_query_wins() {
        let json = Ok(Route::Status(Some(Section::Peers), Format::Json));
        let text = Ok(Route::Status(Some(Section::Peers), Format::Text));
        assert_eq!(get("/status/peers", Some("format=json")), json);
        assert_eq!(
            route("GET", "/status/peers", None, Some("application/json")),
            json
        );
        assert_eq!(
            route(
                "GET",
                "/status/peers",
                None,
                Some("text/html, application/json;q=0.9")
            ),
            json
        );
        assert_eq!(route("GET", "/status/peers", None, Some("*/*")), text);
        assert_eq!(
            route(
                "GET",
                "/status/peers",
                Some("format=text"),
                Some("application/json")
            ),
            text
        );
    }

    #[test]
    fn bad_queries_are_refused() {
        for q in [
            "format=xml",
            "format",
            "format=json&format=json",
            "fmt=json",
            "format=json&x=1",
            "&",
            "=json",
        ] {
            assert!(
                matches!(get("/status", Some(q)), Err(Refusal::BadQuery(_))),
                "{q}"
            );
        }
        assert!(matches!(
            get("/metrics", Some("format=json")),
            Err(Refusal::BadQuery(_))
        ));
        assert!(matches!(get("/", Some("x")), Err(Refusal::BadQuery(_))));
        let long = format!("format=json{}", "&".repeat(300));
        assert!(matches!(
            get("/status", Some(&long)),
            Err(Refusal::BadQuery(_))
        ));
    }

    /// Found by the `http_route` fuzz target: 40 characters outside the
    /// basic plane quoted with `{:?}` made a 400 message of 400 bytes.
    #[test]
    fn a_refusal_quotes_wide_characters_briefly() {
        let q = "tus\u{fffd}\u{71c71}".repeat(30);
        for path in ["/", "/status"] {
            let Err(Refusal::BadQuery(m)) = get(path, Some(&q)) else {
                panic!("{path}?{q:?} not refused");
            };
            assert!(m.len() < 200 && m.is_ascii(), "{m:?}");
        }
    }

    /// Property: any query string at all gets an answer or a 400, never a
    /// panic, and a 400's message is short and has no control characters
    /// (it is echoed to the client).
    #[test]
    fn any_query_is_answered_or_refused_cleanly() {
        use rand::{Rng as _, SeedableRng as _};
        let mut rng = rand::rngs::StdRng::seed_from_u64(18);
        let alphabet: Vec<char> = "format=jsontex&%;\u{0}\n\u{7f}é\u{71c71}=&xX"
            .chars()
            .collect();
        for _ in 0..20_000 {
            let len = rng.random_range(0..40);
            let q: String = (0..len)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect();
            for path in ["/status", "/status/connections", "/report", "/metrics", "/"] {
                match get(path, Some(&q)) {
                    Ok(Route::Status(_, f)) => {
                        let expected = if q.contains("json") {
                            Format::Json
                        } else {
                            Format::Text
                        };
                        if !q.is_empty() {
                            assert_eq!(f, expected, "{q:?}");
                        }
                    }
                    Ok(_) => assert!(q.is_empty(), "{path}?{q:?} accepted"),
                    Err(Refusal::BadQuery(m)) => {
                        assert!(m.len() < 200 && !m.chars().any(char::is_control), "{m:?}");
                    }
                    Err(e) => panic!("{path}?{q:?}: {e:?}"),
                }
            }
        }
    }
}
