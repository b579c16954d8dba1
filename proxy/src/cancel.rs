//! Cancel keys: the client sees the real backend PID with a proxy-issued secret.
//!
//! Applications pass the PID to `pg_terminate_backend` and look it up in
//! `pg_stat_activity`, so it must stay real; the secret is ours so that a client can
//! never learn the upstream one. A CancelRequest whose secret matches is forwarded
//! with the real secret; anything else is silently ignored, as PostgreSQL does.

use dashmap::DashMap;

/// What the proxy needs to cancel one upstream query.
#[derive(Debug, Clone)]
struct Entry {
    client_secret: Vec<u8>,
    upstream_secret: Vec<u8>,
}

/// Proxy-issued cancel keys of the live sessions, by backend PID.
#[derive(Debug, Default)]
pub struct CancelRegistry {
    by_pid: DashMap<i32, Entry>,
}

impl CancelRegistry {
    /// Register a session's upstream key and return the secret to give the client
    /// (same length as the upstream one, so protocol 3.2 clients see what they expect).
    pub fn register(&self, pid: i32, upstream_secret: &[u8]) -> Vec<u8> {
        let mut client_secret = vec![0u8; upstream_secret.len().clamp(4, 256)];
        rand::fill(&mut client_secret[..]);
        self.by_pid.insert(
            pid,
            Entry {
                client_secret: client_secret.clone(),
                upstream_secret: upstream_secret.to_vec(),
            },
        );
        client_secret
    }

    /// Forget a session's key (only if it is still the one this session registered).
    pub fn unregister(&self, pid: i32, client_secret: &[u8]) {
        self.by_pid
            .remove_if(&pid, |_, e| e.client_secret == client_secret);
    }

    /// The upstream secret for a client's CancelRequest, if the secret matches.
    pub fn resolve(&self, pid: i32, client_secret: &[u8]) -> Option<Vec<u8>> {
        let entry = self.by_pid.get(&pid)?;
        constant_time_eq(&entry.client_secret, client_secret).then(|| entry.upstream_secret.clone())
    }

    /// Number of registered sessions.
    pub fn len(&self) -> usize {
        self.by_pid.len()
    }

    /// True when no session is registered.
    pub fn is_empty(&self) -> bool {
        self.by_pid.is_empty()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_only_the_issued_secret() {
        let reg = CancelRegistry::default();
        let ours = reg.register(100, &[1, 2, 3, 4]);
        assert_eq!(ours.len(), 4);
        assert_eq!(reg.resolve(100, &ours), Some(vec![1, 2, 3, 4]));
        let mut wrong = ours.clone();
        wrong[0] ^= 1;
        assert_eq!(reg.resolve(100, &wrong), None);
        assert_eq!(reg.resolve(101, &ours), None);
        reg.unregister(100, &wrong);
        assert_eq!(reg.len(), 1);
        reg.unregister(100, &ours);
        assert!(reg.is_empty());
    }

    #[test]
    fn long_secrets_keep_their_length() {
        let reg = CancelRegistry::default();
        assert_eq!(reg.register(1, &[7; 32]).len(), 32);
    }
}
