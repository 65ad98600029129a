//! Device authentication: `Authorization: TargetToken <token>`, checked against the SHA-256 of
//! the token kept (as hex) in the Secret key the Device's `spec.tokenSecretRef` names. Pure.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The token of an `Authorization: TargetToken <token>` header value (scheme matched without
/// regard to case, as HTTP schemes are).
pub fn target_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("TargetToken") && !token.is_empty()).then_some(token)
}

/// The SHA-256 hex of a token, as stored in its Secret (`printf %s "$TOKEN" | sha256sum`).
pub fn token_hash_hex(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether `token` hashes to `stored` (hex, surrounding whitespace such as a trailing newline
/// ignored, either case). The digests are compared in constant time; a stored value that is
/// not a SHA-256 hex digest matches nothing.
pub fn token_matches(token: &str, stored: &[u8]) -> bool {
    let Ok(stored) = std::str::from_utf8(stored) else {
        return false;
    };
    let Ok(expected) = hex::decode(stored.trim()) else {
        return false;
    };
    if expected.len() != 32 {
        return false;
    }
    let presented = Sha256::digest(token.as_bytes());
    presented.as_slice().ct_eq(&expected).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_carries_a_target_token() {
        assert_eq!(target_token("TargetToken abc"), Some("abc"));
        assert_eq!(target_token("targettoken  abc "), Some("abc"));
        assert_eq!(target_token("GatewayToken abc"), None);
        assert_eq!(target_token("Bearer abc"), None);
        assert_eq!(target_token("TargetToken "), None);
        assert_eq!(target_token("TargetToken"), None);
    }

    #[test]
    fn tokens_match_their_hash_only() {
        let stored = format!("{}\n", token_hash_hex("s3cret"));
        assert!(token_matches("s3cret", stored.as_bytes()));
        assert!(token_matches("s3cret", stored.to_uppercase().as_bytes()));
        assert!(!token_matches("s3cret!", stored.as_bytes()));
        assert!(!token_matches("s3cret", b"s3cret"));
        assert!(!token_matches("s3cret", &stored.as_bytes()[..40]));
        assert!(!token_matches("", b""));
    }
}
