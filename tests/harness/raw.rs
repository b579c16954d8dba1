//! A raw protocol client for tests that need exact bytes: malformed input, cancel keys,
//! protocol versions, direct TLS.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// One backend message: type and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub tag: u8,
    pub body: Vec<u8>,
}

impl Msg {
    /// The SQLSTATE of an ErrorResponse / NoticeResponse.
    pub fn sqlstate(&self) -> Option<String> {
        self.field(b'C')
    }

    /// A field of an ErrorResponse / NoticeResponse.
    pub fn field(&self, code: u8) -> Option<String> {
        let mut i = 0;
        while i < self.body.len() && self.body[i] != 0 {
            let c = self.body[i];
            let end = self.body[i + 1..].iter().position(|&b| b == 0)? + i + 1;
            if c == code {
                return Some(String::from_utf8_lossy(&self.body[i + 1..end]).into_owned());
            }
            i = end + 1;
        }
        None
    }
}

/// A StartupMessage for `user`/`database` with the given protocol version.
pub fn startup_packet(version: i32, params: &[(&str, &str)]) -> Vec<u8> {
    let mut p = vec![0, 0, 0, 0];
    p.extend_from_slice(&version.to_be_bytes());
    for (k, v) in params {
        p.extend_from_slice(k.as_bytes());
        p.push(0);
        p.extend_from_slice(v.as_bytes());
        p.push(0);
    }
    p.push(0);
    let len = p.len() as u32;
    p[..4].copy_from_slice(&len.to_be_bytes());
    p
}

/// A regular message with `tag` and `body`.
pub fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// A Query message.
pub fn query(sql: &str) -> Vec<u8> {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    message(b'Q', &body)
}

/// A Parse message of statement `name` with no parameter types.
pub fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut p = name.as_bytes().to_vec();
    p.push(0);
    p.extend_from_slice(sql.as_bytes());
    p.extend_from_slice(&[0, 0, 0]);
    message(b'P', &p)
}

/// Bind of the unnamed portal to `statement` (no parameters, text results), then Execute
/// of it without a row limit.
pub fn bind_execute(statement: &str) -> Vec<u8> {
    let mut b = vec![0u8];
    b.extend_from_slice(statement.as_bytes());
    b.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0]);
    let mut m = message(b'B', &b);
    m.extend(message(b'E', &[0, 0, 0, 0, 0]));
    m
}

/// A Sync message.
pub fn sync() -> Vec<u8> {
    message(b'S', &[])
}

/// Read one backend message, or None on EOF / timeout.
pub async fn read_msg<S: AsyncRead + Unpin>(s: &mut S) -> Option<Msg> {
    let fut = async {
        let tag = s.read_u8().await.ok()?;
        let len = s.read_u32().await.ok()? as usize;
        let mut body = vec![0; len.checked_sub(4)?];
        s.read_exact(&mut body).await.ok()?;
        Some(Msg { tag, body })
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .ok()
        .flatten()
}

/// Read messages until ReadyForQuery (included) or EOF.
pub async fn read_until_ready<S: AsyncRead + Unpin>(s: &mut S) -> Vec<Msg> {
    let mut out = Vec::new();
    while let Some(m) = read_msg(s).await {
        let done = m.tag == b'Z';
        out.push(m);
        if done {
            break;
        }
    }
    out
}

/// Connect over TCP and log in as a trust user; returns the stream, the BackendKeyData
/// (pid, secret) and every message up to the first ReadyForQuery.
pub async fn login(port: u16, user: &str, db: &str) -> (TcpStream, (i32, Vec<u8>), Vec<Msg>) {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    s.write_all(&startup_packet(
        0x0003_0000,
        &[("user", user), ("database", db)],
    ))
    .await
    .expect("send startup");
    let msgs = read_until_ready(&mut s).await;
    let key = msgs
        .iter()
        .find(|m| m.tag == b'K')
        .map(|m| {
            let pid = i32::from_be_bytes([m.body[0], m.body[1], m.body[2], m.body[3]]);
            (pid, m.body[4..].to_vec())
        })
        .unwrap_or_else(|| panic!("no BackendKeyData in {msgs:?}"));
    (s, key, msgs)
}

/// Send a simple query and collect the answer up to ReadyForQuery.
pub async fn simple<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, sql: &str) -> Vec<Msg> {
    s.write_all(&query(sql)).await.expect("send query");
    read_until_ready(s).await
}

/// The first column of the first DataRow in `msgs`, as text.
pub fn first_value(msgs: &[Msg]) -> Option<String> {
    let row = msgs.iter().find(|m| m.tag == b'D')?;
    let len = i32::from_be_bytes([row.body[2], row.body[3], row.body[4], row.body[5]]);
    if len < 0 {
        return None;
    }
    Some(String::from_utf8_lossy(&row.body[6..6 + len as usize]).into_owned())
}

/// Send a CancelRequest for (pid, secret) to `port`.
pub async fn cancel(port: u16, pid: i32, secret: &[u8]) {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect for cancel");
    let mut p = Vec::new();
    p.extend_from_slice(&((12 + secret.len()) as u32).to_be_bytes());
    p.extend_from_slice(&80877102i32.to_be_bytes());
    p.extend_from_slice(&pid.to_be_bytes());
    p.extend_from_slice(secret);
    s.write_all(&p).await.expect("send cancel");
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
}
