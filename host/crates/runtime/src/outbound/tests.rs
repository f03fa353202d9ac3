//! The client against small servers of the tests' own, written byte by byte so that each
//! test controls what a receiver does with a connection: keep it, close it, never answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

fn loopback_client() -> Outbound {
    Outbound::new(NetworkPolicy::new(vec![
        "127.0.0.0/8".parse().expect("cidr"),
    ]))
    .expect("client")
}

fn post(url: &str, body: &'static str) -> http::Request<Full<Bytes>> {
    http::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("request")
}

/// What the test server does after each request it reads.
#[derive(Clone, Copy)]
enum Then {
    /// Answers 200 with a body and keeps the connection.
    Keep,
    /// Answers 200 and closes a moment later (as a keep-alive timeout does), without saying
    /// so in the response.
    CloseQuietly,
    /// Answers 200 with `connection: close` and closes.
    SayClose,
    /// Answers with a chunked body of three chunks and keeps the connection.
    Chunked,
    /// Reads the request and never answers.
    Silent,
}

/// A server on a free port; counts the connections it accepted.
async fn server(then: Then) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(stream, then));
        }
    });
    (url, accepted)
}

async fn serve(mut stream: TcpStream, then: Then) {
    let mut pending = Vec::new();
    loop {
        // One request: headers, then a body of content-length bytes.
        let Some(body_len) = read_head(&mut stream, &mut pending).await else {
            return;
        };
        while pending.len() < body_len {
            let mut buf = [0u8; 4096];
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => pending.extend_from_slice(&buf[..n]),
            }
        }
        pending.drain(..body_len);
        let answer: &[u8] = match then {
            Then::Keep | Then::CloseQuietly => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            Then::SayClose => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
            Then::Chunked => {
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n1\r\n!\r\n3\r\n!!!\r\n0\r\n\r\n"
            }
            Then::Silent => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return;
            }
        };
        if stream.write_all(answer).await.is_err() {
            return;
        }
        if let Then::CloseQuietly = then {
            tokio::time::sleep(Duration::from_millis(20)).await;
            return;
        }
        if let Then::SayClose = then {
            return;
        }
    }
}

/// Reads up to the end of a request's head; the body length it announces.
async fn read_head(stream: &mut TcpStream, pending: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            pending.drain(..end + 4);
            return Some(len);
        }
        let mut buf = [0u8; 4096];
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
        }
    }
}

const TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn an_ip_literal_is_checked_before_connecting() {
    let outbound = Outbound::new(NetworkPolicy::default()).expect("client");
    let err = outbound
        .send(post("http://127.0.0.1:9/", ""), TIMEOUT, 1024)
        .await
        .expect_err("refused");
    assert!(matches!(err, OutboundError::DeniedAddress(_)), "{err}");
}

#[tokio::test]
async fn a_kept_connection_carries_the_next_requests() {
    let (url, accepted) = server(Then::Keep).await;
    let outbound = loopback_client();
    for _ in 0..5 {
        let response = outbound
            .send(post(&url, "{\"a\":1}"), TIMEOUT, 1024)
            .await
            .expect("answered");
        assert_eq!((response.status, &response.body[..]), (200, &b"ok"[..]));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    assert_eq!(outbound.connections.idle_count(), 1);
}

#[tokio::test]
async fn connections_idle_past_their_time_are_closed() {
    let (url, _) = server(Then::Keep).await;
    let outbound = loopback_client();
    outbound
        .send(post(&url, "{}"), TIMEOUT, 1024)
        .await
        .expect("answered");
    let now = std::time::Instant::now();
    outbound
        .connections
        .close_expired(now + Duration::from_secs(60));
    assert_eq!(outbound.connections.idle_count(), 1, "60 s idle: kept");
    outbound
        .connections
        .close_expired(now + Duration::from_secs(91));
    assert_eq!(outbound.connections.idle_count(), 0, "91 s idle: closed");
}

#[tokio::test]
async fn a_connection_the_server_closed_while_idle_is_not_used_again() {
    let (url, accepted) = server(Then::CloseQuietly).await;
    let outbound = loopback_client();
    for n in 1..=3 {
        outbound
            .send(post(&url, "{}"), TIMEOUT, 1024)
            .await
            .unwrap_or_else(|e| panic!("request {n}: {e}"));
        assert_eq!(
            outbound.connections.idle_count(),
            1,
            "kept after request {n}"
        );
        // Let the server's close arrive before the next request takes the connection.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_response_saying_close_is_not_kept() {
    let (url, accepted) = server(Then::SayClose).await;
    let outbound = loopback_client();
    for _ in 0..2 {
        outbound
            .send(post(&url, "{}"), TIMEOUT, 1024)
            .await
            .expect("answered");
        assert_eq!(outbound.connections.idle_count(), 0);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_chunked_body_is_read_whole_and_the_connection_kept() {
    let (url, accepted) = server(Then::Chunked).await;
    let outbound = loopback_client();
    for _ in 0..2 {
        let response = outbound
            .send(post(&url, "{}"), TIMEOUT, 1024)
            .await
            .expect("answered");
        assert_eq!(&response.body[..], b"ok!!!!");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_body_over_the_limit_is_too_large() {
    let (url, _) = server(Then::Chunked).await;
    let err = loopback_client()
        .send(post(&url, "{}"), TIMEOUT, 4)
        .await
        .expect_err("6 bytes against a limit of 4");
    assert!(matches!(err, OutboundError::TooLarge(4)), "{err}");
}

#[tokio::test]
async fn no_answer_is_a_timeout_and_the_connection_is_dropped() {
    let (url, _) = server(Then::Silent).await;
    let outbound = loopback_client();
    let err = outbound
        .send(post(&url, "{}"), Duration::from_millis(200), 1024)
        .await
        .expect_err("no answer");
    assert!(matches!(err, OutboundError::Timeout(_)), "{err}");
    assert_eq!(outbound.connections.idle_count(), 0);
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_error() {
    // A port that was just free: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let err = loopback_client()
        .send(
            post(&format!("http://127.0.0.1:{port}/"), "{}"),
            TIMEOUT,
            1024,
        )
        .await
        .expect_err("refused");
    assert!(matches!(err, OutboundError::Connect(_)), "{err}");
}

#[tokio::test]
async fn the_request_line_is_origin_form_and_the_host_header_is_set() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let head = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let mut received = Vec::new();
        while !received.windows(4).any(|w| w == b"\r\n\r\n") {
            let mut buf = [0u8; 4096];
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed before the head ended");
            received.extend_from_slice(&buf[..n]);
        }
        let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await;
        String::from_utf8_lossy(&received).into_owned()
    });
    let response = loopback_client()
        .send(
            post(&format!("http://user:pw@{addr}/hook/a?token=t#frag"), ""),
            TIMEOUT,
            1024,
        )
        .await
        .expect("answered");
    assert_eq!(response.status, 204);
    let head = head.await.expect("server").to_ascii_lowercase();
    assert!(
        head.starts_with("post /hook/a?token=t http/1.1\r\n"),
        "{head}"
    );
    assert!(head.contains(&format!("\r\nhost: {addr}\r\n")), "{head}");
    assert!(!head.contains("pw"), "user info is never sent: {head}");
}
