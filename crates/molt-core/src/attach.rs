//! `molt run` and `molt exec` over the API: the requests, the run record,
//! and the frames both sides exchange once the HTTP connection is upgraded
//! (`Upgrade: molt-attach`). A frame is one byte of kind, four bytes of
//! big-endian length and the payload; the same framing both ways keeps the
//! client a plain byte pump that works through any HTTP/1.1 hop.

use serde::{Deserialize, Serialize};

/// The `Upgrade` protocol name of the attach stream.
pub const PROTOCOL: &str = "molt-attach";

/// Client → server: bytes for the process's stdin.
pub const STDIN: u8 = 0;
/// Server → client: the process's stdout.
pub const STDOUT: u8 = 1;
/// Server → client: the process's stderr.
pub const STDERR: u8 = 2;
/// Server → client, last: an [`Exit`] as JSON.
pub const EXIT: u8 = 3;
/// Client → server: stdin ended (the process sees end of file).
pub const STDIN_EOF: u8 = 4;

/// Largest frame payload either side sends or accepts.
pub const MAX_FRAME: usize = 1 << 20;

/// The exit code of a `--timeout` reached, as `timeout(1)` uses it.
pub const TIMEOUT_EXIT: i64 = 124;

/// `POST /api/v1/apps/{name}/run`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunRequest {
    /// The command and its arguments (run as the image's entrypoint's
    /// arguments, like `docker run IMAGE CMD...`).
    pub command: Vec<String>,
    /// A deploy of the App whose digest and environment to run (default:
    /// the serving one).
    #[serde(default)]
    pub release: Option<String>,
    /// An image to run instead, with the App's current environment.
    #[serde(default)]
    pub image: Option<String>,
    /// `KEY=VALUE` added to (or replacing in) the environment.
    #[serde(default)]
    pub env: Vec<String>,
    /// Keep stdin open for the client.
    #[serde(default)]
    pub stdin: bool,
    /// Give the process a terminal.
    #[serde(default)]
    pub tty: bool,
    /// The client's terminal size (columns, rows), with `tty`.
    #[serde(default)]
    pub size: Option<(u16, u16)>,
    /// Kill the command after this many seconds (exit 124).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

/// `POST /api/v1/apps/{name}/exec`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExecRequest {
    pub command: Vec<String>,
    /// Which serving replica (default 0).
    #[serde(default)]
    pub replica: Option<u32>,
    #[serde(default)]
    pub stdin: bool,
    #[serde(default)]
    pub tty: bool,
    #[serde(default)]
    pub size: Option<(u16, u16)>,
}

/// How an attached process ended: the last frame.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Exit {
    /// The command's exit code (124 when `--timeout` killed it).
    pub exit_code: i64,
    /// What Molt has to say besides the output (a timeout, a failure).
    #[serde(default)]
    pub message: Option<String>,
}

/// One `molt run`, as the App's history keeps it (not its output).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunView {
    pub id: String,
    pub app: String,
    /// The command as given.
    pub command: Vec<String>,
    /// The deploy whose version ran, when it was one.
    pub release: Option<String>,
    /// What ran (`repo@digest` when known).
    pub image: String,
    /// Who asked: `cli`, `api`, `dashboard`.
    pub triggered_by: String,
    /// The exit code; `None` while it runs or when it could not be known.
    pub exit_code: Option<i64>,
    /// Why it ended without an exit code of its own (timeout, client gone,
    /// server restart).
    pub error: Option<String>,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub duration_ms: Option<u64>,
}

/// One frame, encoded.
pub fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + payload.len());
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The kind and payload length a frame's five-byte head announces, or why
/// it is refused. (Reading is left to each side's I/O: this crate has none.)
pub fn parse_head(head: [u8; 5]) -> Result<(u8, usize), String> {
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_FRAME {
        return Err(format!(
            "a frame of {len} bytes is over the limit of {MAX_FRAME}"
        ));
    }
    Ok((head[0], len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_head_announces_its_kind_and_length() {
        let bytes = frame(STDOUT, b"hello");
        let head: [u8; 5] = bytes[..5].try_into().unwrap();
        assert_eq!(parse_head(head), Ok((STDOUT, 5)));
        assert_eq!(&bytes[5..], b"hello");
        let mut big = frame(STDIN, b"");
        big[1..5].copy_from_slice(&((MAX_FRAME as u32) + 1).to_be_bytes());
        assert!(parse_head(big[..5].try_into().unwrap()).is_err());
    }
}
