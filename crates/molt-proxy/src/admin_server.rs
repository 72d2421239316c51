//! The proxy's side of the admin socket: JSON lines in, one JSON line out
//! per request. Only the socket's owner can connect (mode 0600).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::admin::{read_line, Request, Response};
use crate::routes::Routes;

/// Binds the socket and restricts it to its owner before anyone can use it
/// for anything (connections are only served once this returns).
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    let listener = UnixListener::bind(path)
        .map_err(|e| anyhow::anyhow!("binding admin socket {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| anyhow::anyhow!("restricting admin socket {}: {e}", path.display()))?;
    Ok(listener)
}

/// Accepts admin connections until the task is dropped.
pub async fn serve(listener: UnixListener, routes: Arc<Routes>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let routes = Arc::clone(&routes);
                tokio::spawn(async move {
                    if let Err(e) = connection(stream, &routes).await {
                        tracing::debug!(error = %e, "admin connection ended");
                    }
                });
            }
            Err(e) => {
                // Out of descriptors and the like: back off, don't spin.
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection(stream: UnixStream, routes: &Routes) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        read_line(&mut reader, &mut line).await?;
        if line.is_empty() {
            return Ok(());
        }
        let resp = match serde_json::from_slice::<Request>(&line) {
            Ok(req) => answer(req, routes).await,
            Err(e) => Response::error(format!("invalid request: {e}")),
        };
        let mut out = serde_json::to_vec(&resp).map_err(std::io::Error::other)?;
        out.push(b'\n');
        write.write_all(&out).await?;
    }
}

/// Carries out one request.
pub async fn answer(req: Request, routes: &Routes) -> Response {
    match req {
        Request::Ping => Response {
            pid: Some(std::process::id()),
            version: Some(env!("CARGO_PKG_VERSION").to_string()),
            ..Response::ok()
        },
        Request::SetRoute { route } => match routes.set_route(route).await {
            Ok(()) => Response::ok(),
            Err(e) => Response::error(e),
        },
        Request::RemoveRoute { app } => match routes.remove_route(&app).await {
            Ok(()) => Response::ok(),
            Err(e) => Response::error(e),
        },
        Request::ListRoutes => Response {
            routes: Some(routes.list()),
            ..Response::ok()
        },
        Request::WaitDrained {
            app,
            addr,
            timeout_ms,
        } => {
            let (drained, closed) = match routes.app(&app) {
                Some(route) => {
                    route
                        .wait_drained(&addr, Duration::from_millis(timeout_ms))
                        .await
                }
                None => (true, 0),
            };
            Response {
                drained: Some(drained),
                closed: Some(closed),
                ..Response::ok()
            }
        }
    }
}
