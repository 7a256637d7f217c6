//! The fault tests' HTTP/1.1 client: one request per connection, the body
//! read piece by piece as it arrives (chunked or up to EOF), optionally
//! over a socket with a small receive buffer.

use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::time::Duration;

use serde_json::Value;

/// Longest a request may go without a byte before it counts as hung.
pub const HANG: Duration = Duration::from_secs(60);

/// A response body as it arrives: chunked or delimited by EOF.
pub struct Body {
    reader: BufReader<TcpStream>,
    chunked: bool,
    eof: bool,
}

impl Body {
    /// The next piece of the body; `None` at its end.
    pub fn piece(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        if self.eof {
            return Ok(None);
        }
        if !self.chunked {
            let mut buf = vec![0; 16 * 1024];
            let n = self.reader.read(&mut buf)?;
            buf.truncate(n);
            self.eof = n == 0;
            return Ok((n > 0).then_some(buf));
        }
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::other("EOF inside a chunked body"));
        }
        let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
            .map_err(|_| std::io::Error::other(format!("bad chunk size line {line:?}")))?;
        let mut piece = vec![0; size + 2];
        self.reader.read_exact(&mut piece)?;
        piece.truncate(size);
        if size == 0 {
            self.eof = true;
            return Ok(None);
        }
        Ok(Some(piece))
    }

    pub fn read_all(&mut self) -> std::io::Result<Vec<u8>> {
        let mut all = Vec::new();
        while let Some(piece) = self.piece()? {
            all.extend(piece);
        }
        Ok(all)
    }
}

/// A connection to `port`; with `rcvbuf`, its receive buffer is that small
/// from the start (so a client that stops reading backs the server up
/// quickly).
pub fn connect(port: u16, rcvbuf: Option<usize>) -> std::io::Result<TcpStream> {
    let Some(size) = rcvbuf else {
        return TcpStream::connect(("127.0.0.1", port));
    };
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrIn, setsockopt, socket, sockopt,
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    setsockopt(&fd, sockopt::RcvBuf, &size)?;
    let addr = SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
    nix::sys::socket::connect(fd.as_raw_fd(), &addr)?;
    // SAFETY: `into_raw_fd` gives up the only owner of a connected stream
    // socket, which the `TcpStream` becomes.
    Ok(unsafe { TcpStream::from_raw_fd(fd.into_raw_fd()) })
}

/// Sends a request (`Connection: close`); returns the status and the body.
pub fn send(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&Value>,
    rcvbuf: Option<usize>,
) -> std::io::Result<(u16, Body)> {
    let stream = connect(port, rcvbuf)?;
    stream.set_read_timeout(Some(HANG))?;
    stream.set_write_timeout(Some(HANG))?;
    crate::common::write_request(&stream, port, method, path, body)?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut chunked = false;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            chunked |= k.trim().eq_ignore_ascii_case("transfer-encoding")
                && v.trim().eq_ignore_ascii_case("chunked");
        }
    }
    let body = Body {
        reader,
        chunked,
        eof: false,
    };
    Ok((status, body))
}

/// A whole response: status and JSON body (panics on transport errors:
/// used for the daemon's own endpoints).
pub fn request(port: u16, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let (status, mut b) =
        send(port, method, path, body, None).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let bytes = b.read_all().unwrap();
    let value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "{method} {path}: not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    (status, value)
}
