//! (F) Startup-phase packets: SSLRequest, GSSENCRequest, CancelRequest, StartupMessage.

use crate::wire::cursor::{Cursor, Malformed};

/// Request code of an SSLRequest.
pub const SSL_REQUEST: i32 = 80877103;
/// Request code of a GSSENCRequest.
pub const GSSENC_REQUEST: i32 = 80877104;
/// Request code of a CancelRequest.
pub const CANCEL_REQUEST: i32 = 80877102;

/// A decoded startup-phase packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    Ssl,
    GssEnc,
    Cancel(CancelRequest),
    Startup(StartupMessage),
    /// A protocol major version we do not speak (e.g. 2.0).
    Unsupported {
        version: i32,
    },
}

/// A CancelRequest: the backend PID and secret key it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelRequest {
    pub pid: i32,
    /// 4 bytes in protocol 3.0, up to 256 bytes from protocol 3.2 on.
    pub secret: Vec<u8>,
}

/// A StartupMessage: the raw packet (forwarded unchanged) and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupMessage {
    /// The packet as received, length prefix included.
    pub raw: Vec<u8>,
    /// Protocol version: major in the high 16 bits, minor in the low 16.
    pub version: i32,
    /// Parameters in order; names and values decoded lossily for reading only.
    pub params: Vec<(String, String)>,
}

impl StartupMessage {
    /// The value of parameter `name`, if sent.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The database user (mandatory in a StartupMessage).
    pub fn user(&self) -> Option<&str> {
        self.param("user").filter(|u| !u.is_empty())
    }

    /// The database, which defaults to the user name.
    pub fn database(&self) -> Option<&str> {
        self.param("database")
            .filter(|d| !d.is_empty())
            .or_else(|| self.user())
    }

    /// Build a StartupMessage for protocol 3.0 from parameters (used by the proxy's own
    /// connections, e.g. the catalog reader).
    pub fn build(params: &[(&str, &str)]) -> Vec<u8> {
        let mut out = vec![0, 0, 0, 0];
        out.extend_from_slice(&0x0003_0000i32.to_be_bytes());
        for (k, v) in params {
            super::put_cstr(&mut out, k.as_bytes());
            super::put_cstr(&mut out, v.as_bytes());
        }
        out.push(0);
        let len = out.len() as u32;
        out[..4].copy_from_slice(&len.to_be_bytes());
        out
    }
}

/// Build an SSLRequest packet.
pub fn ssl_request() -> [u8; 8] {
    let mut p = [0u8; 8];
    p[..4].copy_from_slice(&8u32.to_be_bytes());
    p[4..].copy_from_slice(&SSL_REQUEST.to_be_bytes());
    p
}

/// Build a CancelRequest packet.
pub fn cancel_request(pid: i32, secret: &[u8]) -> Vec<u8> {
    let len = 12 + secret.len();
    let mut p = Vec::with_capacity(len);
    p.extend_from_slice(&(len as u32).to_be_bytes());
    p.extend_from_slice(&CANCEL_REQUEST.to_be_bytes());
    p.extend_from_slice(&pid.to_be_bytes());
    p.extend_from_slice(secret);
    p
}

/// Decode one complete startup-phase packet (length prefix included).
pub fn parse(packet: &[u8]) -> Result<StartupPacket, Malformed> {
    let mut c = Cursor::new(packet, "startup packet");
    let _len = c.i32()?;
    let code = c.i32()?;
    match code {
        SSL_REQUEST if c.is_empty() => Ok(StartupPacket::Ssl),
        GSSENC_REQUEST if c.is_empty() => Ok(StartupPacket::GssEnc),
        SSL_REQUEST | GSSENC_REQUEST => Err(Malformed("startup packet")),
        CANCEL_REQUEST => {
            let pid = c.i32()?;
            let secret = c.remaining();
            if secret.len() < 4 || secret.len() > 256 {
                return Err(Malformed("CancelRequest"));
            }
            Ok(StartupPacket::Cancel(CancelRequest {
                pid,
                secret: secret.to_vec(),
            }))
        }
        version if version >> 16 == 3 => {
            let mut params = Vec::new();
            loop {
                let key = c.cstr()?;
                if key.is_empty() {
                    break;
                }
                let value = c.cstr()?;
                params.push((
                    String::from_utf8_lossy(key).into_owned(),
                    String::from_utf8_lossy(value).into_owned(),
                ));
            }
            if !c.is_empty() {
                return Err(Malformed("StartupMessage"));
            }
            Ok(StartupPacket::Startup(StartupMessage {
                raw: packet.to_vec(),
                version,
                params,
            }))
        }
        version => Ok(StartupPacket::Unsupported { version }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_a_startup_message() {
        let raw = StartupMessage::build(&[("user", "alice"), ("database", "shop")]);
        let StartupPacket::Startup(m) = parse(&raw).unwrap() else {
            panic!("not a startup message")
        };
        assert_eq!(m.user(), Some("alice"));
        assert_eq!(m.database(), Some("shop"));
        assert_eq!(m.version, 0x0003_0000);
        assert_eq!(m.raw, raw);
    }

    #[test]
    fn database_defaults_to_user() {
        let raw = StartupMessage::build(&[("user", "bob")]);
        let StartupPacket::Startup(m) = parse(&raw).unwrap() else {
            panic!("not a startup message")
        };
        assert_eq!(m.database(), Some("bob"));
    }

    #[test]
    fn cancel_and_ssl() {
        assert_eq!(parse(&ssl_request()), Ok(StartupPacket::Ssl));
        let c = cancel_request(42, &[1, 2, 3, 4]);
        assert_eq!(
            parse(&c),
            Ok(StartupPacket::Cancel(CancelRequest {
                pid: 42,
                secret: vec![1, 2, 3, 4]
            }))
        );
        assert!(parse(&cancel_request(42, &[1])).is_err());
    }

    #[test]
    fn unterminated_parameters_are_malformed() {
        let mut raw = StartupMessage::build(&[("user", "alice")]);
        raw.pop();
        raw.pop();
        assert!(parse(&raw).is_err());
    }

    #[test]
    fn old_protocol_is_unsupported() {
        let mut p = vec![0, 0, 0, 8];
        p.extend_from_slice(&0x0002_0000i32.to_be_bytes());
        assert_eq!(
            parse(&p),
            Ok(StartupPacket::Unsupported {
                version: 0x0002_0000
            })
        );
    }
}
