//! The string `format`s the apiserver validates in CRD schemas (`supportedVersionedFormats` in
//! apiextensions-apiserver; every other format, including `int32`/`int64`, is ignored), with
//! the checks of kube-openapi's `strfmt` default registry.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

use regex::Regex;

/// A format the apiserver checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    BsonObjectId,
    Uri,
    Email,
    Hostname,
    Ipv4,
    Ipv6,
    Cidr,
    Mac,
    Uuid,
    Uuid3,
    Uuid4,
    Uuid5,
    Isbn,
    Isbn10,
    Isbn13,
    CreditCard,
    Ssn,
    HexColor,
    RgbColor,
    Byte,
    Password,
    Date,
    Duration,
    DateTime,
}

impl Format {
    /// The validated format for a schema's `format`, or `None` when the apiserver ignores it.
    /// Names are normalised like go-openapi does (dashes removed).
    pub(crate) fn recognise(format: &str) -> Option<Self> {
        Some(match format.replace('-', "").as_str() {
            "bsonobjectid" => Self::BsonObjectId,
            "uri" => Self::Uri,
            "email" => Self::Email,
            "hostname" => Self::Hostname,
            "ipv4" => Self::Ipv4,
            "ipv6" => Self::Ipv6,
            "cidr" => Self::Cidr,
            "mac" => Self::Mac,
            "uuid" => Self::Uuid,
            "uuid3" => Self::Uuid3,
            "uuid4" => Self::Uuid4,
            "uuid5" => Self::Uuid5,
            "isbn" => Self::Isbn,
            "isbn10" => Self::Isbn10,
            "isbn13" => Self::Isbn13,
            "creditcard" => Self::CreditCard,
            "ssn" => Self::Ssn,
            "hexcolor" => Self::HexColor,
            "rgbcolor" => Self::RgbColor,
            "byte" => Self::Byte,
            "password" => Self::Password,
            "date" => Self::Date,
            "duration" => Self::Duration,
            "datetime" => Self::DateTime,
            _ => return None,
        })
    }

    /// Whether `s` is a valid value of this format.
    pub(crate) fn is_valid(self, s: &str) -> bool {
        match self {
            Self::BsonObjectId => s.len() == 24 && s.bytes().all(|b| b.is_ascii_hexdigit()),
            Self::Uri => is_request_uri(s),
            Self::Email => is_email(s),
            Self::Hostname => s.len() <= 255 && HOSTNAME.is_match(s),
            Self::Ipv4 => s.contains('.') && parse_go_ip(s).is_some(),
            Self::Ipv6 => s.contains(':') && parse_go_ip(s).is_some(),
            Self::Cidr => is_cidr(s),
            Self::Mac => is_mac(s),
            Self::Uuid => UUID.is_match(s),
            Self::Uuid3 => UUID3.is_match(s),
            Self::Uuid4 => UUID4.is_match(s),
            Self::Uuid5 => UUID5.is_match(s),
            Self::Isbn => is_isbn10(s) || is_isbn13(s),
            Self::Isbn10 => is_isbn10(s),
            Self::Isbn13 => is_isbn13(s),
            Self::CreditCard => is_credit_card(s),
            Self::Ssn => SSN.is_match(s),
            Self::HexColor => HEX_COLOR.is_match(s),
            Self::RgbColor => RGB_COLOR.is_match(s),
            Self::Byte => is_std_base64(s),
            Self::Password => true,
            Self::Date => is_full_date(s),
            Self::Duration => is_duration(s),
            Self::DateTime => is_date_time(s),
        }
    }
}

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("built-in format regexes are valid")
}

static HOSTNAME: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"^([a-zA-Z0-9\p{S}\p{L}]((-?[a-zA-Z0-9\p{S}\p{L}]{0,62})?)|([a-zA-Z0-9\p{S}\p{L}](([a-zA-Z0-9-\p{S}\p{L}]{0,61}[a-zA-Z0-9\p{S}\p{L}])?)(\.)){1,}([a-zA-Z\p{L}]){2,63})$",
    )
});
static UUID: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$"));
static UUID3: LazyLock<Regex> = LazyLock::new(|| {
    re(r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?3[0-9a-f]{3}-?[0-9a-f]{4}-?[0-9a-f]{12}$")
});
static UUID4: LazyLock<Regex> = LazyLock::new(|| {
    re(r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?4[0-9a-f]{3}-?[89ab][0-9a-f]{3}-?[0-9a-f]{12}$")
});
static UUID5: LazyLock<Regex> = LazyLock::new(|| {
    re(r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?5[0-9a-f]{3}-?[89ab][0-9a-f]{3}-?[0-9a-f]{12}$")
});
static SSN: LazyLock<Regex> = LazyLock::new(|| re(r"^[0-9]{3}[- ]?[0-9]{2}[- ]?[0-9]{4}$"));
static HEX_COLOR: LazyLock<Regex> = LazyLock::new(|| re(r"^#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$"));
static RGB_COLOR: LazyLock<Regex> = LazyLock::new(|| {
    let octet = r"\s*(0|[1-9][0-9]?|1[0-9][0-9]?|2[0-4][0-9]|25[0-5])\s*";
    re(&format!(r"^rgb\({octet},{octet},{octet}\)$"))
});
static DATE_TIME_CLOCK: LazyLock<Regex> = LazyLock::new(|| {
    re(r"^([0-9]{2}):([0-9]{2}):([0-9]{2})(.[0-9]+)?(z|([+-][0-9]{2}:[0-9]{2}))$")
});
static CREDIT_CARD: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"^(?:4[0-9]{12}(?:[0-9]{3})?|5[1-5][0-9]{14}|6(?:011|5[0-9][0-9])[0-9]{12}|3[47][0-9]{13}|3(?:0[0-5]|[68][0-9])[0-9]{11}|(?:2131|1800|35[0-9]{3})[0-9]{11})$",
    )
});
static EMAIL_ADDR_SPEC: LazyLock<Regex> = LazyLock::new(|| {
    // RFC 5322 dot-atom local part and domain, as accepted by net/mail for plain addresses.
    let atom = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+";
    re(&format!(
        r"^(?:{atom}(?:\.{atom})*|\x22(?:[^\x22\\]|\\.)*\x22)@{atom}(?:\.{atom})*$"
    ))
});

/// `full-date` of RFC 3339 (`2006-01-02`), a real calendar date.
fn is_full_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| -> Option<i16> {
        let part = &s[r];
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())
            .flatten()
    };
    let (Some(year), Some(month), Some(day)) = (digits(0..4), digits(5..7), digits(8..10)) else {
        return false;
    };
    (1..=12).contains(&month) && jiff::civil::Date::new(year, month as i8, day as i8).is_ok()
}

/// strfmt's `IsDateTime`: a full date, `T` (any case), and a clock time with zone.
fn is_date_time(s: &str) -> bool {
    if s.len() < 4 {
        return false;
    }
    let lower = s.to_lowercase();
    let mut parts = lower.split('t');
    let (Some(date), Some(time)) = (parts.next(), parts.next()) else {
        return false;
    };
    if !is_full_date(date) {
        return false;
    }
    let Some(caps) = DATE_TIME_CLOCK.captures(time) else {
        return false;
    };
    &caps[1] <= "23" && &caps[2] <= "59" && &caps[3] <= "59"
}

/// Go's `base64.StdEncoding.DecodeString` (padding required, line breaks ignored).
fn is_std_base64(s: &str) -> bool {
    let cleaned: Vec<u8> = s.bytes().filter(|b| *b != b'\r' && *b != b'\n').collect();
    if !cleaned.len().is_multiple_of(4) {
        return false;
    }
    let padding = cleaned.iter().rev().take_while(|b| **b == b'=').count();
    if padding > 2 {
        return false;
    }
    cleaned[..cleaned.len() - padding]
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
}

/// Go's `net.ParseIP`: dotted IPv4 (no leading zeros) or IPv6 (including IPv4-mapped forms).
fn parse_go_ip(s: &str) -> Option<IpAddr> {
    if let Ok(v4) = s.parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(v4));
    }
    s.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

/// Go's `net.ParseCIDR`.
fn is_cidr(s: &str) -> bool {
    let Some((ip, bits)) = s.split_once('/') else {
        return false;
    };
    let max = match parse_go_ip(ip) {
        Some(IpAddr::V4(_)) => 32,
        Some(IpAddr::V6(_)) => 128,
        None => return false,
    };
    !bits.is_empty()
        && bits.len() <= 3
        && bits.bytes().all(|b| b.is_ascii_digit())
        && !(bits.len() > 1 && bits.starts_with('0'))
        && bits.parse::<u32>().is_ok_and(|n| n <= max)
}

/// Go's `net.ParseMAC`: 6, 8 or 20 octets as `xx:xx..`, `xx-xx..` or `xxxx.xxxx..`.
fn is_mac(s: &str) -> bool {
    let valid_len = |octets: usize| matches!(octets, 6 | 8 | 20);
    let hex = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit());
    for sep in [':', '-'] {
        if s.contains(sep) {
            let parts: Vec<&str> = s.split(sep).collect();
            return valid_len(parts.len()) && parts.iter().all(|p| hex(p, 2));
        }
    }
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() > 1 && valid_len(parts.len() * 2) && parts.iter().all(|p| hex(p, 4))
}

/// Go's `url.ParseRequestURI`: an absolute URI or an absolute path.
fn is_request_uri(s: &str) -> bool {
    if s.starts_with('/') {
        return !s.chars().any(|c| c.is_ascii_control() || c == ' ');
    }
    url::Url::parse(s).is_ok()
}

/// `net/mail.ParseAddress` for the common forms: `addr@domain` and `Name <addr@domain>`.
fn is_email(s: &str) -> bool {
    let s = s.trim();
    let addr = match (s.rfind('<'), s.ends_with('>')) {
        (Some(open), true) => &s[open + 1..s.len() - 1],
        _ => s,
    };
    EMAIL_ADDR_SPEC.is_match(addr)
}

fn isbn_digits(s: &str) -> String {
    s.chars().filter(|c| *c != ' ' && *c != '-').collect()
}

fn is_isbn10(s: &str) -> bool {
    let d = isbn_digits(s);
    let b = d.as_bytes();
    if b.len() != 10
        || !b[..9].iter().all(u8::is_ascii_digit)
        || !(b[9].is_ascii_digit() || b[9] == b'X')
    {
        return false;
    }
    let sum: u32 = b
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let v = if *c == b'X' { 10 } else { u32::from(c - b'0') };
            (i as u32 + 1) * v
        })
        .sum();
    sum.is_multiple_of(11)
}

fn is_isbn13(s: &str) -> bool {
    let d = isbn_digits(s);
    let b = d.as_bytes();
    if b.len() != 13 || !b.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let sum: u32 = b[..12]
        .iter()
        .enumerate()
        .map(|(i, c)| u32::from(c - b'0') * if i % 2 == 0 { 1 } else { 3 })
        .sum();
    (10 - sum % 10) % 10 == u32::from(b[12] - b'0')
}

/// govalidator's `IsCreditCard`: a known card number pattern passing the Luhn check.
fn is_credit_card(s: &str) -> bool {
    let digits: String = s.chars().filter(char::is_ascii_digit).collect();
    if !CREDIT_CARD.is_match(&digits) {
        return false;
    }
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, c)| {
            let d = u32::from(c - b'0');
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// strfmt's `IsDuration`: Go's `time.ParseDuration`, or a lenient "<n> <unit>" list such as
/// `3 days` or `1 week 2d`.
fn is_duration(s: &str) -> bool {
    is_go_duration(s) || is_lenient_duration(s)
}

fn is_go_duration(s: &str) -> bool {
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    if s == "0" {
        return true;
    }
    if s.is_empty() {
        return false;
    }
    let mut rest = s;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let mut number_len = int_len;
        let mut frac_len = 0;
        if rest[int_len..].starts_with('.') {
            frac_len = rest[int_len + 1..]
                .bytes()
                .take_while(u8::is_ascii_digit)
                .count();
            number_len = int_len + 1 + frac_len;
        }
        if int_len == 0 && frac_len == 0 {
            return false;
        }
        rest = &rest[number_len..];
        let unit_len = rest
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(rest.len(), |(i, _)| i);
        if !matches!(
            &rest[..unit_len],
            "ns" | "us" | "µs" | "μs" | "ms" | "s" | "m" | "h"
        ) {
            return false;
        }
        rest = &rest[unit_len..];
    }
    true
}

static LENIENT_DURATION: LazyLock<Regex> = LazyLock::new(|| re(r"(([0-9]+)\s*([A-Za-zµ]+))"));

fn is_lenient_duration(s: &str) -> bool {
    const UNITS: &[&[&str]] = &[
        &["ns", "nano"],
        &["us", "µs", "micro"],
        &["ms", "milli"],
        &["s", "sec"],
        &["m", "min"],
        &["h", "hr", "hour"],
        &["d", "day"],
        &["w", "wk", "week"],
    ];
    LENIENT_DURATION.captures_iter(s).any(|caps| {
        let unit = caps[3].trim().to_lowercase();
        UNITS.iter().any(|variants| {
            let last = variants.len() - 1;
            variants
                .iter()
                .enumerate()
                .any(|(i, v)| (i == last && unit.starts_with(v)) || unit == *v)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_time() {
        let f = Format::recognise("date-time").unwrap();
        assert!(f.is_valid("2024-05-01T10:00:00Z"));
        assert!(f.is_valid("2024-05-01T10:00:00.123+02:00"));
        assert!(!f.is_valid("2024-05-01"));
        assert!(!f.is_valid("2024-02-30T10:00:00Z"));
        assert!(!f.is_valid("2024-05-01T25:00:00Z"));
        assert!(!f.is_valid("yesterday"));
    }

    #[test]
    fn integer_formats_are_not_validated() {
        assert_eq!(Format::recognise("int32"), None);
        assert_eq!(Format::recognise("int64"), None);
        assert_eq!(Format::recognise("float"), None);
    }

    #[test]
    fn byte_and_network_formats() {
        let byte = Format::recognise("byte").unwrap();
        assert!(byte.is_valid("aGVsbG8="));
        assert!(!byte.is_valid("aGVsbG8"));
        assert!(!byte.is_valid("not base64!"));
        assert!(Format::Ipv4.is_valid("10.0.0.1"));
        assert!(!Format::Ipv4.is_valid("10.0.0.256"));
        assert!(Format::Ipv6.is_valid("fe80::1"));
        assert!(Format::Cidr.is_valid("10.0.0.0/8"));
        assert!(!Format::Cidr.is_valid("10.0.0.0/33"));
        assert!(Format::Mac.is_valid("00:1a:2b:3c:4d:5e"));
        assert!(Format::Hostname.is_valid("api.flotilla.dev"));
        assert!(!Format::Hostname.is_valid("-bad"));
        assert!(Format::Uuid.is_valid("123e4567-e89b-12d3-a456-426614174000"));
        assert!(Format::Uri.is_valid("https://flotilla.dev/x"));
        assert!(!Format::Uri.is_valid("not a uri"));
        assert!(Format::Email.is_valid("ops@flotilla.dev"));
        assert!(!Format::Email.is_valid("ops"));
    }

    #[test]
    fn durations() {
        assert!(Format::Duration.is_valid("1h30m"));
        assert!(Format::Duration.is_valid("-1.5s"));
        assert!(Format::Duration.is_valid("3 days"));
        assert!(!Format::Duration.is_valid("soon"));
    }

    #[test]
    fn checksummed_formats() {
        assert!(Format::Isbn10.is_valid("0321751043"));
        assert!(Format::Isbn13.is_valid("978-0321751041"));
        assert!(Format::CreditCard.is_valid("4111 1111 1111 1111"));
        assert!(!Format::CreditCard.is_valid("4111 1111 1111 1112"));
    }
}
