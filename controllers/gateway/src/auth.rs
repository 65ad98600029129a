//! Device authentication, pure. `Authorization: TargetToken <token>` is checked against the
//! SHA-256 of the token kept (as hex) in the Secret key the Device's `spec.tokenSecretRef`
//! names. `Authorization: GatewayToken <token>` is a fleet token (hawkBit's gateway token):
//! checked against the `tokenHash` of a Secret labelled `flotilla.dev/gateway-token`, it
//! enrolls an unknown controllerId and keeps authenticating the Devices that Secret enrolled.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The token of an `Authorization: TargetToken <token>` header value (scheme matched without
/// regard to case, as HTTP schemes are).
pub fn target_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("TargetToken") && !token.is_empty()).then_some(token)
}

/// What an `Authorization` header presents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Credential<'a> {
    /// `TargetToken <token>`: one device's own token.
    Target(&'a str),
    /// `GatewayToken <token>`: a fleet token that enrolls devices.
    Gateway(&'a str),
}

/// The credential of an `Authorization` header value (schemes matched without regard to case).
pub fn credential(authorization: &str) -> Option<Credential<'_>> {
    let (scheme, token) = authorization.trim().split_once(' ')?;
    let token = token.trim();
    if token.is_empty() {
        None
    } else if scheme.eq_ignore_ascii_case("TargetToken") {
        Some(Credential::Target(token))
    } else if scheme.eq_ignore_ascii_case("GatewayToken") {
        Some(Credential::Gateway(token))
    } else {
        None
    }
}

/// Whether `name` can name a Device (a DNS-1123 subdomain: at most 253 lowercase
/// alphanumerics, `-` and `.`, starting and ending with an alphanumeric), so an enrolling
/// controllerId can become one.
pub fn is_device_name(name: &str) -> bool {
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 253
        && bytes.first().copied().is_some_and(alnum)
        && bytes.last().copied().is_some_and(alnum)
        && bytes.iter().all(|&c| alnum(c) || c == b'-' || c == b'.')
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// The SHA-256 hex of a token, as stored in its Secret (`printf %s "$TOKEN" | sha256sum`).
pub fn token_hash_hex(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The SHA-256 digest a token Secret stores as hex (surrounding whitespace such as a trailing
/// newline ignored, either case); none when the value is not such a digest.
pub fn stored_hash(stored: &[u8]) -> Option<[u8; 32]> {
    let stored = std::str::from_utf8(stored).ok()?;
    hex::decode(stored.trim()).ok()?.try_into().ok()
}

/// Whether `token` hashes to `expected`, compared in constant time.
pub fn token_hashes_to(token: &str, expected: &[u8; 32]) -> bool {
    Sha256::digest(token.as_bytes())
        .as_slice()
        .ct_eq(expected)
        .into()
}

/// Whether `token` hashes to `stored` ([`stored_hash`]); a stored value that is not a SHA-256
/// hex digest matches nothing.
pub fn token_matches(token: &str, stored: &[u8]) -> bool {
    stored_hash(stored).is_some_and(|expected| token_hashes_to(token, &expected))
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
    fn the_header_carries_a_target_or_a_gateway_token() {
        assert_eq!(
            credential("TargetToken abc"),
            Some(Credential::Target("abc"))
        );
        assert_eq!(
            credential("gatewaytoken abc"),
            Some(Credential::Gateway("abc"))
        );
        assert_eq!(credential("GatewayToken "), None);
        assert_eq!(credential("Bearer abc"), None);
    }

    #[test]
    fn controller_ids_must_be_device_names() {
        for good in ["sensor-1", "a", "gw.site-1.sensor-9", "0abc"] {
            assert!(is_device_name(good), "{good}");
        }
        let long = "a".repeat(254);
        for bad in [
            "",
            "Sensor-1",
            "-a",
            "a-",
            "a..b",
            "a_b",
            "a b",
            long.as_str(),
            "é",
        ] {
            assert!(!is_device_name(bad), "{bad}");
        }
        assert!(!is_device_name(&format!("{}.b", "a".repeat(64))));
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
