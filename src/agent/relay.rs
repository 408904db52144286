//! The loopback relay: a TCP port on 127.0.0.1 whose every connection is piped byte for byte to a
//! fresh connection on the host's proxy socket.
//!
//! It exists because ordinary tools (curl, git, pip, ureq) speak HTTP proxies over TCP, and loopback
//! exists even in `--network none` containers. It never parses or changes the bytes it carries,
//! except in a [`Tagged`] relay, which adds one header (the agent's stated reason for an act that
//! may need the owner's approval) to each request head and carries the rest unchanged.

use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// Start the relay in background threads; returns the bound port.
pub fn start(socket: &Path) -> io::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let socket = socket.to_path_buf();
    std::thread::Builder::new()
        .name("relay".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                let socket = socket.clone();
                let _ = std::thread::Builder::new()
                    .name("relay-conn".into())
                    .spawn(move || pipe(conn, &socket));
            }
        })?;
    Ok(port)
}

/// Carry one connection; a refused socket closes the client connection with a readable 502.
fn pipe(tcp: TcpStream, socket: &PathBuf) {
    let _ = tcp.set_nodelay(true);
    let unix = match UnixStream::connect(socket) {
        Ok(u) => u,
        Err(e) => {
            let msg = format!(
                "claw-agent relay: cannot connect to the proxy socket {}: {e}\n",
                socket.display()
            );
            let resp = format!(
                "HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{msg}",
                msg.len()
            );
            let _ = io::Write::write_all(&mut &tcp, resp.as_bytes());
            return;
        }
    };
    let (Ok(tcp2), Ok(unix2)) = (tcp.try_clone(), unix.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || {
        let _ = io::copy(&mut &tcp2, &mut &unix2);
        let _ = unix2.shutdown(Shutdown::Write);
    });
    let _ = io::copy(&mut &unix, &mut &tcp);
    let _ = tcp.shutdown(Shutdown::Write);
    let _ = up.join();
}

/// Longest request head a tagged relay reads before giving up on adding its header.
const MAX_TAGGED_HEAD: usize = 16 * 1024;

/// A relay of its own for one tool call that adds `X-Claw-Reason` to every request head it
/// carries (for HTTPS: the `CONNECT`, which the proxy reads and never forwards). Stops accepting
/// when dropped.
pub struct Tagged {
    pub port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Tagged {
    /// Start a relay that tells the proxy `reason` (one line, as the header carries it).
    pub fn start(socket: &Path, reason: &str) -> io::Result<Tagged> {
        let line: String = reason
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(300)
            .collect();
        let header = format!(
            "{}: {}\r\n",
            crate::infra::proxy::ask::REASON_HEADER,
            line.trim()
        );
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (socket, halt) = (socket.to_path_buf(), stop.clone());
        std::thread::Builder::new()
            .name("relay-tagged".into())
            .spawn(move || {
                for conn in listener.incoming().flatten() {
                    if halt.load(std::sync::atomic::Ordering::SeqCst) {
                        break;
                    }
                    let (socket, header) = (socket.clone(), header.clone());
                    let _ = std::thread::Builder::new()
                        .name("relay-tagged-conn".into())
                        .spawn(move || pipe_tagged(conn, &socket, &header));
                }
            })?;
        Ok(Tagged { port, stop })
    }
}

impl Drop for Tagged {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wake the blocked accept so the thread sees the flag and ends.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Read the request head's first line, put the header after it, then carry on like [`pipe`].
fn pipe_tagged(tcp: TcpStream, socket: &PathBuf, header: &str) {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let first_line_end = loop {
        if let Some(i) = head.windows(2).position(|w| w == b"\r\n") {
            break i + 2;
        }
        if head.len() > MAX_TAGGED_HEAD {
            return;
        }
        match io::Read::read(&mut &tcp, &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    };
    let Ok(mut unix) = UnixStream::connect(socket) else {
        return;
    };
    let mut out = head[..first_line_end].to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&head[first_line_end..]);
    if io::Write::write_all(&mut unix, &out).is_err() {
        return;
    }
    let (Ok(tcp2), Ok(unix2)) = (tcp.try_clone(), unix.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || {
        let _ = io::copy(&mut &tcp2, &mut &unix2);
        let _ = unix2.shutdown(Shutdown::Write);
    });
    let _ = io::copy(&mut &unix, &mut &tcp);
    let _ = tcp.shutdown(Shutdown::Write);
    let _ = up.join();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;

    #[test]
    fn bytes_pass_both_ways_unchanged() {
        let dir = std::env::temp_dir().join(format!("claw-relay-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("p.sock");
        let _ = std::fs::remove_file(&sock);
        let server = UnixListener::bind(&sock).unwrap();
        let port = start(&sock).unwrap();
        let echo = std::thread::spawn(move || {
            let (mut s, _) = server.accept().unwrap();
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).unwrap();
            buf.reverse();
            s.write_all(&buf).unwrap();
        });
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.write_all(b"abc\x00\xff").unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"\xff\x00cba");
        echo.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
