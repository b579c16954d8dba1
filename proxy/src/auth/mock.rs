//! The mock SCRAM challenge for unknown users and users without a SCRAM verifier, so a
//! failed login does not reveal whether the user exists (PostgreSQL's
//! `scram_mock_salt`, keyed by a per-process secret).

use super::scram::{Verifier, KEY_LEN};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroize;

/// Salt length of a mock verifier: PostgreSQL's `SCRAM_DEFAULT_SALT_LEN`.
const MOCK_SALT_LEN: usize = 16;

/// PostgreSQL's default `scram_iterations`, which every verifier it makes uses unless
/// the setting was changed.
pub const DEFAULT_MOCK_ITERATIONS: u32 = 4096;

/// Per-process secret from which mock verifiers are derived.
///
/// The same user always gets the same salt and iteration count (a probe cannot spot a
/// mock by asking twice), while the salts cannot be predicted from outside.
pub struct MockSecret {
    key: [u8; KEY_LEN],
    iterations: u32,
}

impl MockSecret {
    /// A fresh random secret. `iterations` should match the cluster's
    /// `scram_iterations` so mock challenges look like real ones.
    pub fn generate(iterations: u32) -> MockSecret {
        MockSecret::from_key(rand::random(), iterations)
    }

    /// A secret from fixed key bytes (tests, or several pgveil instances behind one
    /// address that must answer alike).
    pub fn from_key(key: [u8; KEY_LEN], iterations: u32) -> MockSecret {
        MockSecret {
            key,
            iterations: iterations.max(1),
        }
    }

    /// The fake verifier for `user`: deterministic salt and keys that no password
    /// matches in practice. The exchange is failed regardless (it is "doomed").
    pub fn verifier_for(&self, user: &str) -> Verifier {
        let salt = self.derive(b"salt", user);
        Verifier::from_parts(
            self.iterations,
            salt[..MOCK_SALT_LEN].to_vec(),
            self.derive(b"stored-key", user),
            self.derive(b"server-key", user),
        )
    }

    fn derive(&self, label: &[u8], user: &str) -> [u8; KEY_LEN] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key)
            .expect("HMAC-SHA-256 accepts keys of any length");
        mac.update(label);
        mac.update(&[0]);
        mac.update(user.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

impl Drop for MockSecret {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

impl std::fmt::Debug for MockSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockSecret")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_user_same_verifier_other_user_other_salt() {
        let mock = MockSecret::from_key([7; KEY_LEN], 4096);
        let a = mock.verifier_for("alice");
        assert_eq!(a, mock.verifier_for("alice"));
        assert_eq!(a.salt().len(), MOCK_SALT_LEN);
        assert_eq!(a.iterations(), 4096);
        assert_ne!(a.salt(), mock.verifier_for("bob").salt());
    }

    #[test]
    fn different_secrets_give_different_salts() {
        let a = MockSecret::generate(4096).verifier_for("alice");
        let b = MockSecret::generate(4096).verifier_for("alice");
        assert_ne!(a.salt(), b.salt());
    }
}
