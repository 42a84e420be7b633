//! Go's `time.ParseDuration`, used by HEALTHCHECK options (`30s`, `1m30s`, `1.5h`).

/// Parses a Go duration into nanoseconds; `None` when malformed or out of range.
pub fn parse_go_duration(s: &str) -> Option<i128> {
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac_part = "";
        if let Some(r) = rest.strip_prefix('.') {
            let n = r.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &r[..n];
            rest = &r[n..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return None;
        }
        let unit_len = rest
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(rest.len(), |(i, _)| i);
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let mul: i128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let int: i128 = if int_part.is_empty() {
            0
        } else {
            int_part.get(..int_part.len().min(30))?.parse().ok()?
        };
        let mut v = int.checked_mul(mul)?;
        if !frac_part.is_empty() {
            let digits = &frac_part[..frac_part.len().min(18)];
            let f: i128 = digits.parse().ok()?;
            v += f * mul / 10i128.pow(digits.len() as u32);
        }
        total = total.checked_add(v)?;
        if total > i64::MAX as i128 {
            return None;
        }
    }
    Some(if neg { -total } else { total })
}

#[cfg(test)]
mod tests {
    use super::parse_go_duration as p;

    #[test]
    fn durations() {
        assert_eq!(p("0"), Some(0));
        assert_eq!(p("30s"), Some(30_000_000_000));
        assert_eq!(p("1m30s"), Some(90_000_000_000));
        assert_eq!(p("1.5h"), Some(5_400_000_000_000));
        assert_eq!(p("500ms"), Some(500_000_000));
        assert_eq!(p("10us"), Some(10_000));
        assert_eq!(p("-1s"), Some(-1_000_000_000));
        assert_eq!(p(".5s"), Some(500_000_000));
        assert_eq!(p("1"), None);
        assert_eq!(p("s"), None);
        assert_eq!(p(""), None);
        assert_eq!(p("1d"), None);
        assert_eq!(p("99999999999999999999h"), None);
    }
}
