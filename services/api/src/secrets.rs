//! API key secrets: generated with the OS RNG, stored only as SHA-256, compared in constant time.

use std::fmt;

use rand::distributions::Alphanumeric;
use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const RANDOM_LEN: usize = 40;
const MIN_RANDOM_LEN: usize = 32;

/// A key secret. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl Secret {
    /// A new secret for `environment` (`live` or `test`): the prefix and 40 base62 characters.
    pub fn generate(environment: &str) -> Self {
        let random: String =
            rand::rngs::OsRng.sample_iter(&Alphanumeric).take(RANDOM_LEN).map(char::from).collect();
        Self(format!("{}{random}", prefix_for(environment)))
    }

    /// Accepts a client-chosen secret (the bootstrap key) when it has a documented prefix and at
    /// least 32 base62 characters after it.
    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.strip_prefix("pwbk_live_").or_else(|| text.strip_prefix("pwbk_test_"))?;
        (rest.len() >= MIN_RANDOM_LEN && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
            .then(|| Self(text.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn environment(&self) -> &'static str {
        if self.0.starts_with("pwbk_test_") {
            "test"
        } else {
            "live"
        }
    }

    pub fn prefix(&self) -> &'static str {
        prefix_for(self.environment())
    }

    pub fn last_four(&self) -> String {
        self.0[self.0.len() - 4..].to_owned()
    }

    pub fn hash(&self) -> String {
        hash_secret(&self.0)
    }
}

pub fn prefix_for(environment: &str) -> &'static str {
    if environment == "test" {
        "pwbk_test_"
    } else {
        "pwbk_live_"
    }
}

/// Hex SHA-256 of a presented secret; keys are high-entropy, so no slow hash is needed.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

pub fn hashes_match(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_have_the_prefix_and_enough_entropy() {
        let secret = Secret::generate("test");
        assert!(secret.expose().starts_with("pwbk_test_"));
        assert_eq!(secret.expose().len(), 10 + RANDOM_LEN);
        assert_eq!(Secret::parse(secret.expose()), Some(secret.clone()));
        assert_ne!(Secret::generate("live"), Secret::generate("live"));
        assert!(!format!("{secret:?}").contains(&secret.expose()[10..]));
    }

    #[test]
    fn weak_or_unprefixed_secrets_are_refused() {
        assert!(Secret::parse("pwbk_live_short").is_none());
        assert!(Secret::parse(&format!("sk_live_{}", "a".repeat(40))).is_none());
        assert!(Secret::parse(&format!("pwbk_live_{}-", "a".repeat(40))).is_none());
    }
}
