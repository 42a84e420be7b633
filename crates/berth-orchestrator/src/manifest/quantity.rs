//! Kubernetes resource quantities ("100m", "32Mi", "1.5", "2e3") as exact numbers.

use std::fmt;

/// A parsed quantity, kept as thousandths of the base unit so CPU millicores and
/// memory bytes are both exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Quantity {
    milli: i128,
}

/// A quantity that is not in Kubernetes' syntax.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid quantity {text:?}: {why}")]
pub struct QuantityError {
    /// What was written.
    pub text: String,
    /// What is wrong with it.
    pub why: &'static str,
}

impl Quantity {
    /// Parse `text` (decimal or binary SI suffix, or a decimal exponent).
    pub fn parse(text: &str) -> Result<Self, QuantityError> {
        let err = |why| QuantityError {
            text: text.to_string(),
            why,
        };
        let s = text.trim();
        if s.is_empty() {
            return Err(err("empty"));
        }
        let (negative, s) = match s.as_bytes()[0] {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let digits_end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (number, suffix) = s.split_at(digits_end);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(err("no number"));
        }
        // (multiplier numerator, denominator) relative to the base unit
        let (mul, div): (i128, i128) = match suffix {
            "" => (1, 1),
            "n" => (1, 1_000_000_000),
            "u" => (1, 1_000_000),
            "m" => (1, 1_000),
            "k" => (1_000, 1),
            "M" => (1_000_000, 1),
            "G" => (1_000_000_000, 1),
            "T" => (1_000_000_000_000, 1),
            "P" => (1_000_000_000_000_000, 1),
            "E" => (1_000_000_000_000_000_000, 1),
            "Ki" => (1 << 10, 1),
            "Mi" => (1 << 20, 1),
            "Gi" => (1 << 30, 1),
            "Ti" => (1 << 40, 1),
            "Pi" => (1 << 50, 1),
            "Ei" => (1 << 60, 1),
            e if e.starts_with(['e', 'E']) => {
                let exp: u32 = e[1..].parse().map_err(|_| err("bad exponent"))?;
                if exp > 18 {
                    return Err(err("exponent too large"));
                }
                (10i128.pow(exp), 1)
            }
            _ => return Err(err("unknown suffix")),
        };
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        if frac_part.len() > 9 {
            return Err(err("too many decimal places"));
        }
        let scale = 10i128.pow(frac_part.len() as u32);
        let whole: i128 = format!("{int_part}{frac_part}")
            .trim_start_matches('0')
            .parse()
            .or_else(|e: std::num::ParseIntError| match e.kind() {
                std::num::IntErrorKind::Empty => Ok(0),
                _ => Err(err("number too large")),
            })?;
        // value = whole / scale * mul / div, in thousandths, rounded up like Kubernetes
        let num = whole
            .checked_mul(mul)
            .and_then(|v| v.checked_mul(1000))
            .ok_or_else(|| err("number too large"))?;
        let den = scale * div;
        let milli = (num + den - 1) / den;
        Ok(Quantity {
            milli: if negative { -milli } else { milli },
        })
    }

    /// Thousandths of the unit: millicores for CPU.
    pub fn milli(self) -> i128 {
        self.milli
    }

    /// The value in whole units, rounded up: bytes for memory.
    pub fn value(self) -> i128 {
        (self.milli + 999).div_euclid(1000)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.milli % 1000 == 0 {
            write!(f, "{}", self.milli / 1000)
        } else {
            write!(f, "{}m", self.milli)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_forms() {
        assert_eq!(Quantity::parse("100m").unwrap().milli(), 100);
        assert_eq!(Quantity::parse("0.5").unwrap().milli(), 500);
        assert_eq!(Quantity::parse("2").unwrap().milli(), 2000);
        assert_eq!(Quantity::parse("1.25").unwrap().milli(), 1250);
        assert_eq!(Quantity::parse("250000u").unwrap().milli(), 250);
    }

    #[test]
    fn memory_forms() {
        assert_eq!(Quantity::parse("32Mi").unwrap().value(), 32 << 20);
        assert_eq!(Quantity::parse("1G").unwrap().value(), 1_000_000_000);
        assert_eq!(Quantity::parse("1.5Gi").unwrap().value(), 3 << 29);
        assert_eq!(Quantity::parse("128974848").unwrap().value(), 128974848);
        assert_eq!(Quantity::parse("129e6").unwrap().value(), 129_000_000);
        assert_eq!(Quantity::parse("64k").unwrap().value(), 64_000);
    }

    #[test]
    fn rejects_nonsense() {
        for bad in ["", "Mi", "1.2.3", "12XB", "1e99", "abc", "."] {
            let e = Quantity::parse(bad).unwrap_err();
            assert!(e.to_string().contains("invalid quantity"), "{bad}: {e}");
        }
    }

    #[test]
    fn display_round_trips() {
        assert_eq!(Quantity::parse("100m").unwrap().to_string(), "100m");
        assert_eq!(Quantity::parse("3").unwrap().to_string(), "3");
    }
}
