//! Kubernetes resource quantities (`resource.Quantity`): an exact parser following the
//! apimachinery grammar, comparison and addition, canonical formatting, and the schema and
//! validation of resource lists (`requests.cpu: 500m`, `limits.memory: 8Gi`, ...).
//!
//! ```text
//! <quantity>        ::= <signedNumber><suffix>
//! <signedNumber>    ::= <number> | <sign><number>
//! <number>          ::= <digits> | <digits>.<digits> | <digits>. | .<digits>
//! <sign>            ::= "+" | "-"
//! <suffix>          ::= <binarySI> | <decimalExponent> | <decimalSI>
//! <binarySI>        ::= Ki | Mi | Gi | Ti | Pi | Ei
//! <decimalSI>       ::= n | u | m | "" | k | M | G | T | P | E
//! <decimalExponent> ::= "e" <signedNumber> | "E" <signedNumber>   (integer exponents)
//! ```
//!
//! Like apimachinery, values are kept exactly down to nano units (10⁻⁹) and anything finer is
//! rounded up, away from zero ("if you asked for some resources, you get some"). Magnitudes
//! above 2⁶³−1 units are capped there (apimachinery caps binary-SI values; we cap all forms so
//! that the arithmetic stays exact in 128 bits).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Add;
use std::str::FromStr;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use schemars::{Schema, SchemaGenerator, json_schema};

use crate::common::{SpecError, is_dns1123_subdomain};

/// Nano units per unit.
const NANOS_PER_UNIT: i128 = 1_000_000_000;
/// The largest magnitude a quantity can have, in nano units: (2⁶³−1) units.
const MAX_NANOS: i128 = i64::MAX as i128 * NANOS_PER_UNIT;
/// Inputs longer than this are refused rather than parsed digit by digit.
const MAX_INPUT_LENGTH: usize = 256;
/// Most entries in one resource list (quota `hard`, limit range maps).
pub const MAX_RESOURCES: u32 = 64;
/// Longest accepted quantity string in a resource list.
pub const MAX_QUANTITY_LENGTH: u32 = 64;
/// Schema pattern of a non-negative quantity string (integer exponents only, as the parser).
pub const NON_NEGATIVE_QUANTITY_PATTERN: &str =
    "^\\+?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\\+|-)?[0-9]+))?$";

/// Why a string is not a quantity.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The string is empty.
    #[error("quantity is empty")]
    Empty,
    /// The string is longer than any sensible quantity.
    #[error("quantity is longer than {MAX_INPUT_LENGTH} characters")]
    TooLong,
    /// There are no digits where the number should be.
    #[error("quantity {0:?} has no digits")]
    NoDigits(String),
    /// The suffix is not one of the known ones.
    #[error(
        "quantity {0:?} has an unknown suffix (expected one of n u m k M G T P E, Ki Mi Gi Ti Pi Ei, or an exponent e<N>)"
    )]
    BadSuffix(String),
}

/// How a quantity was written, which is also how it is formatted again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantityFormat {
    /// Powers of ten with SI suffixes: `500m`, `2k`, `1G`.
    DecimalSI,
    /// Powers of two with IEC suffixes: `512Mi`, `8Gi`.
    BinarySI,
    /// Powers of ten as an exponent: `1e3`, `5e-3`.
    DecimalExponent,
}

/// A parsed quantity: an exact value in nano units and the format it was written in.
///
/// Ordering and equality compare values only (`1k == 1000 == 1e3`).
#[derive(Clone, Copy, Debug)]
pub struct ParsedQuantity {
    nanos: i128,
    format: QuantityFormat,
}

impl ParsedQuantity {
    /// Zero, in decimal SI form.
    pub const ZERO: ParsedQuantity = ParsedQuantity {
        nanos: 0,
        format: QuantityFormat::DecimalSI,
    };

    /// Parses a quantity string such as `500m`, `8Gi`, `1.5`, `1e3` or `-2`.
    pub fn parse(input: &str) -> Result<Self, QuantityError> {
        if input.is_empty() {
            return Err(QuantityError::Empty);
        }
        if input.len() > MAX_INPUT_LENGTH {
            return Err(QuantityError::TooLong);
        }
        let (negative, rest) = split_sign(input);
        let (digits, decimal_exponent, rest) =
            split_number(rest).ok_or_else(|| QuantityError::NoDigits(input.to_owned()))?;
        let suffix =
            parse_suffix(rest).ok_or_else(|| QuantityError::BadSuffix(input.to_owned()))?;

        let mut magnitude = digits;
        let (exponent10, format) = match suffix {
            Suffix::Decimal(e) => (i64::from(e), QuantityFormat::DecimalSI),
            Suffix::Exponent(e) => (e, QuantityFormat::DecimalExponent),
            Suffix::Binary(power_of_two) => {
                for _ in 0..power_of_two {
                    magnitude.double();
                }
                (0, QuantityFormat::BinarySI)
            }
        };
        // value = magnitude × 10^(exponent10 + decimal_exponent); in nanos, nine more.
        let nanos = magnitude.to_nanos(
            exponent10
                .saturating_add(decimal_exponent)
                .saturating_add(9),
        );
        Ok(Self {
            nanos: if negative { -nanos } else { nanos },
            format,
        })
    }

    /// Parses a `k8s_openapi` [`Quantity`].
    pub fn from_quantity(quantity: &Quantity) -> Result<Self, QuantityError> {
        Self::parse(&quantity.0)
    }

    /// The value in nano units (10⁻⁹), exact.
    pub fn nanos(&self) -> i128 {
        self.nanos
    }

    /// The format the quantity was written in.
    pub fn format(&self) -> QuantityFormat {
        self.format
    }

    /// Whether the value is below zero.
    pub fn is_negative(&self) -> bool {
        self.nanos < 0
    }

    /// Whether the value is zero.
    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    /// The value in whole units, rounded away from zero (as apimachinery's `Value()`).
    pub fn value(&self) -> i64 {
        div_away_from_zero(self.nanos, NANOS_PER_UNIT)
    }

    /// The value in thousandths, rounded away from zero (as apimachinery's `MilliValue()`),
    /// saturating at the bounds of `i64`.
    pub fn milli_value(&self) -> i64 {
        div_away_from_zero(self.nanos, 1_000_000)
    }

    /// The sum, capped at the largest representable magnitude; keeps `self`'s format.
    pub fn saturating_add(self, other: Self) -> Self {
        Self {
            nanos: (self.nanos + other.nanos).clamp(-MAX_NANOS, MAX_NANOS),
            format: self.format,
        }
    }

    /// The canonical string, as apimachinery serializes it: the largest suffix that needs no
    /// fraction (`1500m` → `1500m`, `1.5` → `1500m`, `2048Ki` → `2Mi`, `1000` → `1k`).
    pub fn to_canonical_string(&self) -> String {
        self.to_string()
    }

    /// The canonical form as a `k8s_openapi` [`Quantity`].
    pub fn to_quantity(&self) -> Quantity {
        Quantity(self.to_string())
    }
}

impl PartialEq for ParsedQuantity {
    fn eq(&self, other: &Self) -> bool {
        self.nanos == other.nanos
    }
}

impl Eq for ParsedQuantity {}

impl PartialOrd for ParsedQuantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ParsedQuantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

impl Add for ParsedQuantity {
    type Output = ParsedQuantity;

    fn add(self, other: Self) -> Self {
        self.saturating_add(other)
    }
}

impl FromStr for ParsedQuantity {
    type Err = QuantityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<&Quantity> for ParsedQuantity {
    type Error = QuantityError;

    fn try_from(quantity: &Quantity) -> Result<Self, Self::Error> {
        Self::from_quantity(quantity)
    }
}

impl fmt::Display for ParsedQuantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nanos == 0 {
            return f.write_str("0");
        }
        let sign = if self.nanos < 0 { "-" } else { "" };
        let magnitude = self.nanos.unsigned_abs();
        let whole_units = magnitude.is_multiple_of(NANOS_PER_UNIT.unsigned_abs());

        // Binary form only for whole numbers of at least 1024, as apimachinery does; anything
        // else would lose precision or read oddly, so it falls back to decimal SI.
        if self.format == QuantityFormat::BinarySI
            && whole_units
            && magnitude >= 1024 * NANOS_PER_UNIT.unsigned_abs()
        {
            let mut units = magnitude / NANOS_PER_UNIT.unsigned_abs();
            let mut suffix_index = 0;
            while suffix_index < BINARY_SUFFIXES.len() && units.is_multiple_of(1024) {
                units /= 1024;
                suffix_index += 1;
            }
            let suffix = if suffix_index == 0 {
                ""
            } else {
                BINARY_SUFFIXES[suffix_index - 1]
            };
            return write!(f, "{sign}{units}{suffix}");
        }

        // Decimal: strip trailing zeros, then lower the exponent to a multiple of three.
        let mut mantissa = magnitude;
        let mut exponent: i32 = -9;
        while mantissa.is_multiple_of(10) {
            mantissa /= 10;
            exponent += 1;
        }
        let aligned = exponent.div_euclid(3) * 3;
        mantissa *= 10u128.pow((exponent - aligned) as u32);
        if self.format == QuantityFormat::DecimalExponent {
            if aligned == 0 {
                write!(f, "{sign}{mantissa}")
            } else {
                write!(f, "{sign}{mantissa}e{aligned}")
            }
        } else {
            let suffix = match aligned {
                -9 => "n",
                -6 => "u",
                -3 => "m",
                0 => "",
                3 => "k",
                6 => "M",
                9 => "G",
                12 => "T",
                15 => "P",
                _ => "E",
            };
            if aligned > 18 {
                // Unreachable with the cap (2⁶³−1 units < 10¹⁹), kept exact nonetheless.
                write!(
                    f,
                    "{sign}{mantissa}{}E",
                    "000".repeat(((aligned - 18) / 3) as usize)
                )
            } else {
                write!(f, "{sign}{mantissa}{suffix}")
            }
        }
    }
}

const BINARY_SUFFIXES: [&str; 6] = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];

enum Suffix {
    /// Multiply by 10^n.
    Decimal(i8),
    /// Multiply by 10^n, written as an exponent.
    Exponent(i64),
    /// Multiply by 2^n.
    Binary(u8),
}

fn split_sign(s: &str) -> (bool, &str) {
    match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    }
}

/// Splits `<number>` off the front: its significant digits, the power of ten the digits must
/// be multiplied by (minus the count of fractional digits), and the rest of the string.
fn split_number(s: &str) -> Option<(Digits, i64, &str)> {
    let bytes = s.as_bytes();
    let integer_end = bytes
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(bytes.len());
    let mut end = integer_end;
    let mut fraction = "";
    if bytes.get(end) == Some(&b'.') {
        let fraction_start = end + 1;
        let fraction_len = bytes[fraction_start..]
            .iter()
            .position(|b| !b.is_ascii_digit())
            .unwrap_or(bytes.len() - fraction_start);
        fraction = &s[fraction_start..fraction_start + fraction_len];
        end = fraction_start + fraction_len;
    }
    let integer = &s[..integer_end];
    if integer.is_empty() && fraction.is_empty() {
        return None;
    }
    let digits = Digits::from_decimal(integer.bytes().chain(fraction.bytes()));
    Some((digits, -(fraction.len() as i64), &s[end..]))
}

fn parse_suffix(s: &str) -> Option<Suffix> {
    let decimal = |e| Some(Suffix::Decimal(e));
    match s {
        "" => decimal(0),
        "n" => decimal(-9),
        "u" => decimal(-6),
        "m" => decimal(-3),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        "Ki" => Some(Suffix::Binary(10)),
        "Mi" => Some(Suffix::Binary(20)),
        "Gi" => Some(Suffix::Binary(30)),
        "Ti" => Some(Suffix::Binary(40)),
        "Pi" => Some(Suffix::Binary(50)),
        "Ei" => Some(Suffix::Binary(60)),
        _ => {
            let exponent = s.strip_prefix('e').or_else(|| s.strip_prefix('E'))?;
            let (negative, digits) = split_sign(exponent);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            // Exponents beyond ±10⁶ only ever cap or round to the smallest unit; saturate.
            let magnitude: i64 = digits.parse().unwrap_or(i64::MAX).min(1_000_000);
            Some(Suffix::Exponent(if negative {
                -magnitude
            } else {
                magnitude
            }))
        }
    }
}

/// An unsigned decimal integer as its digits (most significant first, no leading zeros), so
/// that parsing is exact whatever the number of digits.
struct Digits(Vec<u8>);

impl Digits {
    fn from_decimal(ascii: impl Iterator<Item = u8>) -> Self {
        let digits: Vec<u8> = ascii.map(|b| b - b'0').skip_while(|d| *d == 0).collect();
        Digits(digits)
    }

    fn double(&mut self) {
        let mut carry = 0;
        for digit in self.0.iter_mut().rev() {
            let doubled = *digit * 2 + carry;
            *digit = doubled % 10;
            carry = doubled / 10;
        }
        if carry > 0 {
            self.0.insert(0, carry);
        }
    }

    /// `self × 10^exponent` as an integer, rounded away from zero and capped at [`MAX_NANOS`].
    fn to_nanos(&self, exponent: i64) -> i128 {
        if self.0.is_empty() {
            return 0;
        }
        let integer_digits = self.0.len() as i64 + exponent;
        // More than 28 integer digits is above the cap (about 9.2 × 10²⁷ nanos).
        if integer_digits > 28 {
            return MAX_NANOS;
        }
        if integer_digits <= 0 {
            // A non-zero value below one nano unit rounds up to one.
            return 1;
        }
        let integer_digits = integer_digits as usize;
        let mut value: i128 = 0;
        for position in 0..integer_digits {
            let digit = self.0.get(position).copied().unwrap_or(0);
            value = value * 10 + i128::from(digit);
        }
        let has_fraction = self.0.iter().skip(integer_digits).any(|d| *d != 0);
        if has_fraction {
            value += 1;
        }
        value.min(MAX_NANOS)
    }
}

fn div_away_from_zero(nanos: i128, divisor: i128) -> i64 {
    let quotient = nanos / divisor;
    let rounded = if nanos % divisor == 0 {
        quotient
    } else {
        quotient + nanos.signum()
    };
    rounded.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// Whether `name` is a valid resource name in a resource list: a Kubernetes qualified name
/// such as `cpu`, `requests.memory`, `count/services.loadbalancers` or `nvidia.com/gpu`.
pub fn is_resource_name(name: &str) -> bool {
    let (prefix, local) = match name.rsplit_once('/') {
        Some((prefix, local)) => (Some(prefix), local),
        None => (None, name),
    };
    let local_ok = !local.is_empty()
        && local.len() <= 63
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && local.as_bytes()[0].is_ascii_alphanumeric()
        && local.as_bytes()[local.len() - 1].is_ascii_alphanumeric();
    local_ok && prefix.is_none_or(is_dns1123_subdomain)
}

/// Validates a resource list (names and quantities, none negative), reporting each problem
/// under `field[name]`, and returns the entries that are valid, parsed.
pub fn validate_resource_list(
    field: &str,
    list: &BTreeMap<String, Quantity>,
    errors: &mut Vec<SpecError>,
) -> BTreeMap<String, ParsedQuantity> {
    let mut parsed = BTreeMap::new();
    for (name, quantity) in list {
        let path = format!("{field}[{name}]");
        if !is_resource_name(name) {
            errors.push(SpecError::new(
                &path,
                "not a valid resource name (e.g. requests.cpu, limits.memory, pods, count/services.loadbalancers)",
            ));
            continue;
        }
        match ParsedQuantity::from_quantity(quantity) {
            Ok(value) if value.is_negative() => {
                errors.push(SpecError::new(
                    &path,
                    format!("{:?} must not be negative", quantity.0),
                ));
            }
            Ok(value) => {
                parsed.insert(name.clone(), value);
            }
            Err(error) => errors.push(SpecError::new(&path, error.to_string())),
        }
    }
    parsed
}

/// Schema of a resource list (`map[ResourceName]Quantity`) whose quantities must not be
/// negative: at most [`MAX_RESOURCES`] entries, each an int-or-string matching
/// [`NON_NEGATIVE_QUANTITY_PATTERN`] (strings) or at least 0 (integers).
pub fn resource_list_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "maxProperties": MAX_RESOURCES,
        "additionalProperties": {
            "x-kubernetes-int-or-string": true,
            "pattern": NON_NEGATIVE_QUANTITY_PATTERN,
            "maxLength": MAX_QUANTITY_LENGTH,
            "minimum": 0,
        },
    })
}

/// Schema of a resource list reported in status (usage, entitlements): at most
/// [`MAX_RESOURCES`] int-or-string quantities. Not constrained further, since it mirrors what
/// the cluster reports.
pub fn observed_resource_list_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "maxProperties": MAX_RESOURCES,
        "additionalProperties": {
            "x-kubernetes-int-or-string": true,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn nanos(s: &str) -> i128 {
        ParsedQuantity::parse(s)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .nanos()
    }

    #[test]
    fn parses_every_suffix() {
        const G: i128 = NANOS_PER_UNIT;
        assert_eq!(nanos("1"), G);
        assert_eq!(nanos("1n"), 1);
        assert_eq!(nanos("1u"), 1_000);
        assert_eq!(nanos("1m"), 1_000_000);
        assert_eq!(nanos("1k"), 1_000 * G);
        assert_eq!(nanos("1M"), 1_000_000 * G);
        assert_eq!(nanos("1G"), 1_000_000_000 * G);
        assert_eq!(nanos("1T"), 10i128.pow(12) * G);
        assert_eq!(nanos("1P"), 10i128.pow(15) * G);
        assert_eq!(nanos("1E"), 10i128.pow(18) * G);
        assert_eq!(nanos("1Ki"), 1024 * G);
        assert_eq!(nanos("1Mi"), (1 << 20) * G);
        assert_eq!(nanos("1Gi"), (1 << 30) * G);
        assert_eq!(nanos("1Ti"), (1i128 << 40) * G);
        assert_eq!(nanos("1Pi"), (1i128 << 50) * G);
        assert_eq!(nanos("1Ei"), (1i128 << 60) * G);
        assert_eq!(nanos("1e3"), 1_000 * G);
        assert_eq!(nanos("1E3"), 1_000 * G);
        assert_eq!(nanos("5e-3"), 5_000_000);
        assert_eq!(nanos("2e+2"), 200 * G);
    }

    #[test]
    fn parses_number_forms() {
        assert_eq!(nanos("1.5"), 1_500_000_000);
        assert_eq!(nanos("1."), 1_000_000_000);
        assert_eq!(nanos(".5"), 500_000_000);
        assert_eq!(nanos("+2"), 2_000_000_000);
        assert_eq!(nanos("-2"), -2_000_000_000);
        assert_eq!(nanos("0"), 0);
        assert_eq!(nanos("-0"), 0);
        assert_eq!(nanos("000123"), 123_000_000_000);
        assert_eq!(nanos("1.5Gi"), 1_610_612_736_000_000_000);
        assert_eq!(nanos("0.5Ki"), 512_000_000_000);
    }

    #[test]
    fn rounds_below_nano_up_and_caps_huge_values() {
        assert_eq!(nanos("0.1n"), 1);
        assert_eq!(nanos("1.0000000001"), 1_000_000_001);
        assert_eq!(nanos("-0.1n"), -1);
        assert_eq!(nanos("1e-40"), 1);
        assert_eq!(nanos("1e40"), MAX_NANOS);
        assert_eq!(nanos("16Ei"), MAX_NANOS);
        assert_eq!(nanos("-16Ei"), -MAX_NANOS);
        assert_eq!(nanos("1e999999999999999999999"), MAX_NANOS);
    }

    #[test]
    fn refuses_malformed_input() {
        for bad in [
            "", "-", "+", ".", "Ki", "1Ki1", "1 k", " 1", "1K", "1ki", "1e", "1e+", "1e1.5",
            "1.2.3", "--1", "1mi", "0x10", "one", "1Kib", "∞",
        ] {
            assert!(
                ParsedQuantity::parse(bad).is_err(),
                "{bad:?} should not parse"
            );
        }
        assert_eq!(
            ParsedQuantity::parse(&"1".repeat(300)),
            Err(QuantityError::TooLong)
        );
    }

    #[test]
    fn compares_by_value() {
        let p = |s| ParsedQuantity::parse(s).unwrap();
        assert_eq!(p("1k"), p("1000"));
        assert_eq!(p("1e3"), p("1000"));
        assert!(p("1Ki") > p("1k"));
        assert!(p("500m") < p("1"));
        assert!(p("-1") < p("0"));
    }

    #[test]
    fn formats_canonically() {
        let canonical = |s: &str| ParsedQuantity::parse(s).unwrap().to_string();
        assert_eq!(canonical("1.5"), "1500m");
        assert_eq!(canonical("1000"), "1k");
        assert_eq!(canonical("1500"), "1500");
        assert_eq!(canonical("1500000"), "1500k");
        assert_eq!(canonical("0.5"), "500m");
        assert_eq!(canonical("100m"), "100m");
        assert_eq!(canonical("2048Ki"), "2Mi");
        assert_eq!(canonical("1.5Gi"), "1536Mi");
        assert_eq!(canonical("1000Ki"), "1000Ki");
        assert_eq!(canonical("0.5Ki"), "512");
        assert_eq!(canonical("1.5Ki"), "1536");
        assert_eq!(canonical("0.1Ki"), "102400m");
        assert_eq!(canonical("1e3"), "1e3");
        assert_eq!(canonical("1.5e3"), "1500");
        assert_eq!(canonical("-5e-3"), "-5e-3");
        assert_eq!(canonical("0"), "0");
        assert_eq!(canonical("0Gi"), "0");
        assert_eq!(canonical("-2k"), "-2k");
        assert_eq!(canonical("1n"), "1n");
        assert_eq!(canonical("1500u"), "1500u");
    }

    #[test]
    fn values_round_away_from_zero() {
        let p = |s| ParsedQuantity::parse(s).unwrap();
        assert_eq!(p("1500m").value(), 2);
        assert_eq!(p("-1500m").value(), -2);
        assert_eq!(p("2").value(), 2);
        assert_eq!(p("1n").milli_value(), 1);
        assert_eq!(p("8Gi").value(), 8 * 1024 * 1024 * 1024);
    }

    #[test]
    fn adds_saturating() {
        let p = |s| ParsedQuantity::parse(s).unwrap();
        assert_eq!((p("500m") + p("1.5")).to_string(), "2");
        assert_eq!((p("1Gi") + p("1Gi")).to_string(), "2Gi");
        assert_eq!((p("8Ei") + p("8Ei")).nanos(), MAX_NANOS);
    }

    #[test]
    fn resource_names() {
        for good in [
            "cpu",
            "requests.cpu",
            "limits.memory",
            "pods",
            "count/services.loadbalancers",
            "nvidia.com/gpu",
            "requests.nvidia.com/gpu",
            "hugepages-2Mi",
        ] {
            assert!(is_resource_name(good), "{good}");
        }
        for bad in [
            "",
            "requests cpu",
            "/cpu",
            "cpu/",
            "-cpu",
            "Example.com/gpu",
            "a/b/",
        ] {
            assert!(!is_resource_name(bad), "{bad}");
        }
    }

    #[test]
    fn validates_resource_lists() {
        let list = BTreeMap::from([
            ("cpu".to_owned(), Quantity("2".into())),
            ("memory".to_owned(), Quantity("-1Gi".into())),
            ("pods".to_owned(), Quantity("ten".into())),
            ("bad name".to_owned(), Quantity("1".into())),
        ]);
        let mut errors = Vec::new();
        let parsed = validate_resource_list("spec.quota.hard", &list, &mut errors);
        assert_eq!(parsed.keys().collect::<Vec<_>>(), ["cpu"]);
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.quota.hard[bad name]",
                "spec.quota.hard[memory]",
                "spec.quota.hard[pods]"
            ]
        );
    }

    fn decimal_suffix() -> impl Strategy<Value = (&'static str, i32)> {
        prop::sample::select(vec![
            ("n", -9),
            ("u", -6),
            ("m", -3),
            ("", 0),
            ("k", 3),
            ("M", 6),
            ("G", 9),
        ])
    }

    proptest! {
        /// Whatever the format, formatting and parsing again gives the same value.
        #[test]
        fn canonical_form_round_trips(input in "[+-]?[0-9]{1,12}(\\.[0-9]{0,6})?(Ki|Mi|Gi|Ti|n|u|m|k|M|G|T|P|e-?[0-9])?") {
            let parsed = ParsedQuantity::parse(&input).unwrap();
            let again = ParsedQuantity::parse(&parsed.to_string()).unwrap();
            prop_assert_eq!(parsed.nanos(), again.nanos(), "{} -> {}", input, parsed);
            // The canonical form is a fixed point once its own format is read back: as in
            // apimachinery, `812.5Ki` is written `832000` (binary, not a whole number of Ki),
            // which reads back as decimal and is written `832k` from then on.
            let third = ParsedQuantity::parse(&again.to_string()).unwrap();
            prop_assert_eq!(third.to_string(), again.to_string());
            prop_assert_eq!(third.nanos(), parsed.nanos());
        }

        /// Integers with decimal suffixes parse to exactly integer × 10^exponent.
        #[test]
        fn decimal_suffixes_scale_exactly(n in 0i64..1_000_000_000, (suffix, exponent) in decimal_suffix()) {
            let expected = i128::from(n) * 10i128.pow((exponent + 9) as u32);
            prop_assert_eq!(nanos(&format!("{n}{suffix}")), expected);
            prop_assert_eq!(nanos(&format!("{n}e{exponent}")), expected);
        }

        /// Binary suffixes multiply by powers of 1024.
        #[test]
        fn binary_suffixes_scale_exactly(n in 0i64..1_000_000, power in 1u32..=4) {
            let suffix = BINARY_SUFFIXES[power as usize - 1];
            let expected = i128::from(n) * 1024i128.pow(power) * NANOS_PER_UNIT;
            prop_assert_eq!(nanos(&format!("{n}{suffix}")), expected);
        }

        /// Ordering agrees with the ordering of the numbers written.
        #[test]
        fn ordering_matches_numbers(a in -1_000_000i64..1_000_000, b in -1_000_000i64..1_000_000) {
            let pa = ParsedQuantity::parse(&format!("{a}m")).unwrap();
            let pb = ParsedQuantity::parse(&format!("{b}m")).unwrap();
            prop_assert_eq!(pa.cmp(&pb), a.cmp(&b));
        }

        /// The parser never panics, whatever it is given.
        #[test]
        fn never_panics(input in "\\PC{0,40}") {
            let _ = ParsedQuantity::parse(&input);
        }

        /// Every string the schema pattern admits, the parser accepts as non-negative.
        #[test]
        fn schema_pattern_agrees_with_parser(input in "\\+?([0-9]{1,6}(\\.[0-9]{0,3})?|\\.[0-9]{1,3})([KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]{1,2})?") {
            let parsed = ParsedQuantity::parse(&input).unwrap();
            prop_assert!(!parsed.is_negative());
        }
    }
}
