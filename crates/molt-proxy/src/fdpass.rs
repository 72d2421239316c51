//! Passing open descriptors to another process over a Unix socket
//! (`SCM_RIGHTS`): how a new proxy inherits the running one's listening
//! sockets, so that the listen queue never goes away and no connection is
//! refused during an upgrade. Built on rustix's safe `sendmsg`/`recvmsg`.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
};
use tokio::io::Interest;
use tokio::net::UnixStream;

use crate::admin::MAX_LINE;

/// The most descriptors one message carries (http, lock, metrics).
pub const MAX_FDS: usize = 4;

/// Writes all of `data`; `fds` travel with its first bytes.
pub async fn send_with_fds(
    stream: &UnixStream,
    data: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::other("too many descriptors for one message"));
    }
    let mut sent = stream
        .async_io(Interest::WRITABLE, || {
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
            let mut control = SendAncillaryBuffer::new(&mut space);
            if !control.push(SendAncillaryMessage::ScmRights(fds)) {
                return Err(io::Error::other(
                    "descriptors do not fit the control buffer",
                ));
            }
            Ok(sendmsg(
                stream,
                &[IoSlice::new(data)],
                &mut control,
                SendFlags::NOSIGNAL,
            )?)
        })
        .await?;
    // The descriptors went with the first write; the rest is plain bytes.
    while sent < data.len() {
        stream.writable().await?;
        match stream.try_write(&data[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads one `\n`-terminated line (returned without the `\n`) and every
/// descriptor that arrived with it. Nothing may follow the line: the peer
/// waits for our answer.
pub async fn recv_line_with_fds(stream: &UnixStream) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut line = Vec::new();
    let mut fds = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = stream
            .async_io(Interest::READABLE, || {
                let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
                let mut control = RecvAncillaryBuffer::new(&mut space);
                let msg = recvmsg(
                    stream,
                    &mut [IoSliceMut::new(&mut buf)],
                    &mut control,
                    RecvFlags::CMSG_CLOEXEC,
                )?;
                for message in control.drain() {
                    if let RecvAncillaryMessage::ScmRights(rights) = message {
                        fds.extend(rights);
                    }
                }
                if msg.flags.contains(ReturnFlags::CTRUNC) {
                    return Err(io::Error::other("more descriptors were sent than expected"));
                }
                Ok(msg.bytes)
            })
            .await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before a full line",
            ));
        }
        line.extend_from_slice(&buf[..n]);
        if let Some(end) = line.iter().position(|b| *b == b'\n') {
            line.truncate(end);
            return Ok((line, fds));
        }
        if line.len() > MAX_LINE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "admin line too long",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsFd;

    #[tokio::test]
    async fn a_file_crosses_with_its_line() {
        let (a, b) = UnixStream::pair().expect("pair");
        let mut file = tempfile::tempfile().expect("tempfile");
        file.write_all(b"shared").expect("write");
        let big = vec![b'x'; 100_000];
        let mut data = big.clone();
        data.push(b'\n');
        let fds = [file.as_fd()];
        let send = send_with_fds(&a, &data, &fds);
        let recv = recv_line_with_fds(&b);
        let (sent, received) = tokio::join!(send, recv);
        sent.expect("send");
        let (line, fds) = received.expect("recv");
        assert_eq!(line, big);
        assert_eq!(fds.len(), 1);
        let mut got = std::fs::File::from(fds.into_iter().next().expect("fd"));
        got.rewind().expect("seek");
        let mut text = String::new();
        got.read_to_string(&mut text).expect("read");
        assert_eq!(text, "shared");
    }
}
