//! A local HTTP server on its own thread and runtime, for the test doubles (the webhook sink, the
//! vendor mock): it keeps answering while the test's own runtime is busy, and stops when its
//! handle is dropped.

use std::net::SocketAddr;

use axum::Router;

/// A running server; dropping it shuts the server down gracefully.
pub struct Served {
    pub addr: SocketAddr,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

/// Serves `app` on an ephemeral loopback port; `what` names it in panics.
pub fn serve(app: Router, what: &'static str) -> Served {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{what} runtime: {e}"));
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .unwrap_or_else(|e| panic!("bind {what}: {e}"));
            addr_tx
                .send(listener.local_addr().expect("addr"))
                .expect("send addr");
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
                .unwrap_or_else(|e| panic!("{what} serve: {e}"));
        });
    });
    let addr = addr_rx
        .recv()
        .unwrap_or_else(|e| panic!("{what} address: {e}"));
    Served {
        addr,
        _shutdown: tx,
    }
}
