//! Access control over HTTP: JWT publish rights, private topics read with a token from a
//! header, a cookie or the query (on every stream path), and CORS for browsers.

use hyper::StatusCode;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use sse_server::Config;
use tokio::net::TcpStream;

use crate::support::*;

const KEY: &str = "an-http-test-key-of-32-bytes-ok!";

fn sign(claims: serde_json::Value) -> String {
    encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(KEY.as_bytes())).unwrap()
}

fn secured(private: &[&str]) -> Config {
    Config {
        jwt_secret: Some(KEY.parse().unwrap()),
        private_topics: private.iter().map(|p| p.parse().unwrap()).collect(),
        ..config()
    }
}

async fn post_data(server: &TestServer, topic: &str, auth: Option<&str>, data: &str) -> (StatusCode, String) {
    let bearer = auth.map(|token| format!("Bearer {token}"));
    let headers: Vec<(&str, &str)> = bearer.as_deref().map(|b| ("authorization", b)).into_iter().collect();
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let (status, _, body) =
        request_with(tcp, "POST", &format!("/events?topic={topic}"), &headers, data.to_owned()).await;
    (status, body)
}

async fn post(server: &TestServer, topic: &str, auth: Option<&str>) -> (StatusCode, String) {
    post_data(server, topic, auth, "data").await
}

#[tokio::test]
async fn a_jwt_publishes_only_to_the_topics_its_claims_name() {
    let server = TestServer::start(secured(&[])).await;
    let alerts = sign(serde_json::json!({"sub": "monitor", "sse": {"publish": ["alerts/*"]}}));
    assert_eq!(post(&server, "alerts/disk", Some(&alerts)).await.0, StatusCode::CREATED);
    let (status, body) = post(&server, "news", Some(&alerts)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("\"error\":\"forbidden\""), "{body}");
    let forged = encode(
        &Header::new(Algorithm::HS256),
        &serde_json::json!({"sse": {"publish": ["*"]}}),
        &EncodingKey::from_secret(b"some-other-key-of-32-bytes-long!"),
    )
    .unwrap();
    let (status, body) = post(&server, "news", Some(&forged)).await;
    assert_eq!((status, body.contains("invalid_token")), (StatusCode::UNAUTHORIZED, true), "{body}");
    assert!(!body.contains(forged.rsplit('.').next().unwrap()), "the token is not echoed");
    assert_eq!(post(&server, "news", None).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn private_topics_need_a_subscribe_token_from_a_header_a_cookie_or_the_query() {
    let server = TestServer::start(secured(&["private/*"])).await;
    let reader = sign(serde_json::json!({"sse": {"subscribe": ["private/a"]}}));
    let writer = sign(serde_json::json!({"sse": {"publish": ["*"]}}));
    let bearer = format!("Bearer {reader}");
    let cookie = format!("theme=dark; sse_token={reader}");
    for proto in ALL_PROTOS {
        let open = |path: String, headers: Vec<(&'static str, String)>| async move {
            let tcp = TcpStream::connect(server.addr).await.unwrap();
            let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            StreamClient::with_headers(tcp, &path, &headers, proto).await
        };
        let public = open("/events?topic=public".into(), vec![]).await;
        assert_eq!(public.status, StatusCode::OK, "{proto:?}: public topics need nothing");
        let refused = open("/events?topic=public&topic=private/a".into(), vec![]).await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{proto:?}");
        assert_eq!(refused.headers["www-authenticate"], "Bearer", "{proto:?}");
        let other = open("/events?topic=private/b".into(), vec![("authorization", bearer.clone())]).await;
        assert_eq!(other.status, StatusCode::FORBIDDEN, "{proto:?}: the claim names private/a only");

        let ways = [
            ("header", "/events?topic=private/a".to_owned(), vec![("authorization", bearer.clone())]),
            ("cookie", "/events?topic=private/a".to_owned(), vec![("cookie", cookie.clone())]),
            ("query", format!("/events?topic=private/a&access_token={reader}"), vec![]),
        ];
        for (way, path, headers) in ways {
            let stream = open(path, headers).await;
            assert_eq!(stream.status, StatusCode::OK, "{proto:?} with the token in the {way}");
            let mut events = stream.events();
            let data = format!("{proto:?} {way}");
            let (status, body) = post_data(&server, "private/a", Some(&writer), &data).await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            let id = body.split("\"id\":\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
            let event = events.next_within(PATIENCE).await.expect("the private event arrives");
            assert_eq!((event.id, event.data), (id, data), "{proto:?} {way}");
        }
    }
}

/// A stream opened with a token ends when the token expires (plus the 30 s leeway the
/// check allows), on both stream paths, with a farewell saying why.
#[tokio::test]
async fn a_private_stream_ends_when_its_token_expires() {
    let server = TestServer::start(secured(&["private/*"])).await;
    for proto in [Proto::Http1, Proto::Http2] {
        // Expired 28 s ago: still accepted within the leeway, for one to two more seconds
        // (whole seconds). Signed for each stream: one token for both would leave the
        // second stream anything from nothing to a second to be opened in.
        let exp = jsonwebtoken::get_current_timestamp() - 28;
        let token = sign(serde_json::json!({"exp": exp, "sse": {"subscribe": ["private/*"]}}));
        let bearer = format!("Bearer {token}");
        let tcp = TcpStream::connect(server.addr).await.unwrap();
        let mut stream =
            StreamClient::with_headers(tcp, "/events?topic=private/x", &[("authorization", &bearer)], proto).await;
        assert_eq!(stream.status, StatusCode::OK, "{proto:?}");
        let text = stream.read_until(PATIENCE, |text| text.contains("token expired")).await;
        assert!(text.contains(": disconnected: the access token expired"), "{proto:?}: {text}");
    }
    let metrics = server.metrics.clone();
    let expired = sse_server::metrics::DisconnectReason::TokenExpired;
    eventually("both streams counted as expired", || metrics.disconnects_total(expired) == 2).await;
    let public = StreamClient::open(server.addr, "/events?topic=public", None, Proto::Http1).await;
    assert_eq!(public.status, StatusCode::OK, "public streams have no expiry");
}

#[tokio::test]
async fn allowed_origins_get_cors_headers_and_preflights_others_get_neither() {
    let origin = "https://app.example.com";
    let server = TestServer::start(Config { cors_origins: vec![origin.parse().unwrap()], ..config() }).await;
    let options = |from: &'static str, method: &'static str| async move {
        let tcp = TcpStream::connect(server.addr).await.unwrap();
        let headers = [("origin", from), ("access-control-request-method", method)];
        request_with(tcp, "OPTIONS", "/events?topic=t", &headers, "").await
    };
    let (status, headers, _) = options(origin, "POST").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(headers["access-control-allow-origin"], origin);
    assert_eq!(headers["access-control-allow-credentials"], "true");
    assert!(headers["access-control-allow-headers"].to_str().unwrap().contains("authorization"));
    let (status, headers, body) = options("https://evil.example.com", "POST").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("origin_not_allowed") && !headers.contains_key("access-control-allow-origin"));
    assert_eq!(options(origin, "DELETE").await.0, StatusCode::FORBIDDEN);

    for proto in ALL_PROTOS {
        for (from, allowed) in [(origin, true), ("https://evil.example.com", false)] {
            let tcp = TcpStream::connect(server.addr).await.unwrap();
            let stream = StreamClient::with_headers(tcp, "/events?topic=t", &[("origin", from)], proto).await;
            assert_eq!(stream.status, StatusCode::OK);
            let echoed = stream.headers.get("access-control-allow-origin").map(|v| v.to_str().unwrap().to_owned());
            assert_eq!(echoed, allowed.then(|| from.to_owned()), "{proto:?} from {from}");
            assert_eq!(stream.headers["vary"], "origin", "{proto:?}");
        }
    }
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let (status, headers, _) = request_with(tcp, "POST", "/events?topic=t", &[("origin", origin)], "x").await;
    assert_eq!((status, &headers["access-control-allow-origin"]), (StatusCode::CREATED, &origin.parse().unwrap()));
}
