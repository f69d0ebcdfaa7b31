//! Accepting API connections within limits, so that idle or slow clients
//! (slowloris) cannot take the file descriptors a reload needs: at most
//! `max_connections` open at once (more are answered 503 and closed), a
//! request's headers and its body each have `request_timeout` to arrive (an
//! idle kept-alive connection too), and no connection lives longer than
//! [`CONNECTION_LIFETIME`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::ApiError;

/// File descriptors left to everything but the API connections: the
/// watcher's reloads (policy and include files, nft children, netlink,
/// feed downloads, the health file).
pub const FD_RESERVE: u64 = 256;

/// A connection is closed (after its current request) this long after it
/// was accepted, so one that never reads its answer cannot hold a slot.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(120);

/// The largest request body accepted (block and unblock requests are tiny).
pub const MAX_BODY: usize = 64 * 1024;

/// Said to a connection over the limit before it is closed.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 61\r\nConnection: close\r\nRetry-After: 5\r\n\r\n{\"error\":\"too many open API connections; try again shortly\"}\n";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub request_timeout: Duration,
}

impl Limits {
    /// `max_connections` lowered, when it must be, so that that many open
    /// connections still leave [`FD_RESERVE`] of `fd_limit` descriptors;
    /// the note says so.
    pub fn fit(max_connections: usize, request_timeout: Duration, fd_limit: u64) -> (Limits, Option<String>) {
        let room = usize::try_from(fd_limit.saturating_sub(FD_RESERVE)).unwrap_or(usize::MAX).max(1);
        let note = (max_connections > room).then(|| {
            format!(
                "--max-connections {max_connections} lowered to {room}: the open-file limit is {fd_limit} and {FD_RESERVE} stay free for reloads (raise LimitNOFILE)"
            )
        });
        (Limits { max_connections: max_connections.min(room).max(1), request_timeout }, note)
    }
}

/// Raises this process's soft open-file limit to its hard limit (systemd
/// starts services with 1024 soft) and returns the soft limit in force.
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            // Refused under a seccomp filter (@resources): the unit's LimitNOFILE applies.
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    lim.rlim_cur
}

/// Serves `app` on `listener` within `limits` until `shutdown` completes.
pub async fn serve(listener: TcpListener, app: Router, limits: Limits, shutdown: impl Future<Output = ()>) {
    let app = app.layer(axum::middleware::from_fn_with_state(limits.request_timeout, read_body_in_time));
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut shutdown = std::pin::pin!(shutdown);
    let mut saturated = false;
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors or a connection reset before accept: wait, do not spin.
                tracing::warn!(error = %e, "cannot accept an API connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if !saturated {
                tracing::warn!(
                    max_connections = limits.max_connections,
                    "API connection limit reached: new connections get 503 until open ones finish or time out"
                );
                saturated = true;
            }
            let _ = stream.try_write(BUSY);
            continue;
        };
        if saturated && slots.available_permits() > limits.max_connections / 2 {
            tracing::info!("API connections back under the limit");
            saturated = false;
        }
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let mut http = http1::Builder::new();
            http.timer(TokioTimer::new()).header_read_timeout(limits.request_timeout);
            let conn = http.serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                served = conn.as_mut() => {
                    if let Err(e) = served {
                        tracing::debug!(error = %e, "API connection closed");
                    }
                }
                () = tokio::time::sleep(CONNECTION_LIFETIME) => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(limits.request_timeout, conn).await;
                }
            }
            drop(slot);
        });
    }
}

/// Reads the whole request body within the timeout (408 otherwise) and at
/// most [`MAX_BODY`] bytes (413), before any handler runs.
async fn read_body_in_time(State(timeout): State<Duration>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, MAX_BODY)).await {
        Ok(Ok(bytes)) => next.run(Request::from_parts(parts, Body::from(bytes))).await,
        Ok(Err(_)) => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {MAX_BODY} bytes or was cut off"),
        )
        .into_response(),
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!("the request body did not arrive within {} s", timeout.as_secs_f32()),
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busy_answer_is_well_formed() {
        let text = std::str::from_utf8(BUSY).expect("ascii");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        assert!(head.contains(&format!("Content-Length: {}\r\n", body.len())), "{head}");
        assert!(serde_json::from_str::<serde_json::Value>(body).is_ok(), "{body}");
    }

    #[test]
    fn connections_leave_the_reserve_free() {
        let t = Duration::from_secs(10);
        assert_eq!(Limits::fit(256, t, 65536), (Limits { max_connections: 256, request_timeout: t }, None));
        let (limits, note) = Limits::fit(256, t, 300);
        assert_eq!(limits.max_connections, 300 - FD_RESERVE as usize);
        assert!(note.is_some_and(|n| n.contains("lowered to 44")));
        assert_eq!(Limits::fit(256, t, 100).0.max_connections, 1, "never zero");
    }
}
