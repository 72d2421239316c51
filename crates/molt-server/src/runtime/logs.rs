//! Reading an engine log stream, for containers and Swarm services alike.

use super::*;

impl Runtime {
    /// The last `lines` lines of a container's output, stdout and stderr.
    pub async fn logs_tail(&self, id: &str, lines: usize) -> String {
        let options = log_options(false, Some(lines as u64), None);
        log_text(self.docker.logs(id, Some(options))).await
    }

    /// A container's output as it comes, line by line: the last `tail`
    /// lines (all when `None`), from `since` (unix seconds), then new ones
    /// while `follow`.
    pub fn log_lines(
        &self,
        id: &str,
        follow: bool,
        tail: Option<u64>,
        since: Option<i64>,
    ) -> impl futures_util::Stream<Item = String> + Send + 'static {
        log_chunks(self.docker.logs(id, Some(log_options(follow, tail, since))))
    }
}

/// The engine's options for a container's (or a service's) output: the
/// last `tail` lines (all when `None`), from `since` (unix seconds), then
/// new ones while `follow`.
pub(crate) fn log_options(follow: bool, tail: Option<u64>, since: Option<i64>) -> LogsOptions {
    LogsOptions {
        stdout: true,
        stderr: true,
        follow,
        tail: tail.map_or_else(|| "all".to_string(), |t| t.to_string()),
        since: since.unwrap_or(0).clamp(0, i32::MAX as i64) as i32,
        ..Default::default()
    }
}

/// The text of an engine log stream, cut after 64 KiB.
pub(crate) async fn log_text(
    stream: impl futures_util::Stream<
        Item = std::result::Result<bollard::container::LogOutput, bollard::errors::Error>,
    >,
) -> String {
    let mut stream = std::pin::pin!(stream);
    let mut out = String::new();
    while let Some(Ok(chunk)) = stream.next().await {
        out.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        if out.len() > 64 * 1024 {
            break;
        }
    }
    out.trim_end().to_string()
}

/// An engine log stream as text, as it comes; it ends at the first error.
pub(crate) fn log_chunks(
    stream: impl futures_util::Stream<
            Item = std::result::Result<bollard::container::LogOutput, bollard::errors::Error>,
        > + Send
        + 'static,
) -> impl futures_util::Stream<Item = String> + Send + 'static {
    stream
        .take_while(|r| futures_util::future::ready(r.is_ok()))
        .filter_map(|r| async move {
            r.ok()
                .map(|c| String::from_utf8_lossy(&c.into_bytes()).into_owned())
        })
}
