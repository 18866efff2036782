//! Parsing of Kubernetes resource quantities ("500m", "1.5Gi", "2e3"), for validation
//! and for handing byte counts to the query pods.

use std::fmt;

/// A quantity string that is not in Kubernetes' format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidQuantity(pub String);

impl fmt::Display for InvalidQuantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a valid quantity (expected e.g. \"500m\", \"2\", \"10Gi\")",
            self.0
        )
    }
}

impl std::error::Error for InvalidQuantity {}

/// Parses a quantity into its numeric value (for "1Ki": 1024.0, for "500m": 0.5).
pub fn parse_quantity(text: &str) -> Result<f64, InvalidQuantity> {
    let invalid = || InvalidQuantity(text.to_string());
    let trimmed = text.trim();
    if trimmed.is_empty() || trimmed != text {
        return Err(invalid());
    }
    let number_end = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(trimmed.len());
    let (number, suffix) = trimmed.split_at(number_end);
    if number.is_empty() || number == "+" || number == "-" || number.matches('.').count() > 1 {
        return Err(invalid());
    }
    if number[1..].contains(['+', '-']) {
        return Err(invalid());
    }
    let value: f64 = number.parse().map_err(|_| invalid())?;
    let multiplier = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exponent if exponent.starts_with(['e', 'E']) => {
            let power: i32 = exponent[1..].parse().map_err(|_| invalid())?;
            10f64.powi(power)
        }
        _ => return Err(invalid()),
    };
    Ok(value * multiplier)
}

/// Parses a quantity that counts bytes, rounding up to a whole byte.
pub fn parse_bytes(text: &str) -> Result<u64, InvalidQuantity> {
    let value = parse_quantity(text)?;
    if value < 0.0 {
        return Err(InvalidQuantity(text.to_string()));
    }
    Ok(value.ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_suffix_family() {
        for (text, expected) in [
            ("1", 1.0),
            ("500m", 0.5),
            ("1.5", 1.5),
            ("2k", 2000.0),
            ("1Ki", 1024.0),
            ("10Gi", 10.0 * 1024f64.powi(3)),
            ("1e3", 1000.0),
            ("1E-3", 0.001),
            ("+4M", 4e6),
        ] {
            assert_eq!(parse_quantity(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn rejects_malformed_quantities() {
        for text in ["", " 1", "Gi", "1GB", "1.2.3", "abc", "1-2", "1 Gi", "--1"] {
            assert!(parse_quantity(text).is_err(), "{text:?} should be rejected");
        }
    }

    #[test]
    fn bytes_round_up_and_reject_negatives() {
        assert_eq!(parse_bytes("1.5"), Ok(2));
        assert_eq!(parse_bytes("1Mi"), Ok(1 << 20));
        assert!(parse_bytes("-1").is_err());
    }
}
