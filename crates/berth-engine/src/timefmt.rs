//! RFC 3339 times without a date crate: formatting, parsing and `--since` values.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Days since 1970-01-01 -> (year, month, day); Howard Hinnant's civil-from-days.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// (year, month, day) -> days since 1970-01-01 (the inverse of the above).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `t` as RFC 3339 with nanoseconds in UTC (`2026-12-03T10:00:00.123456789Z`).
pub fn format(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    let (y, mo, da) = civil_from_days(days);
    format!(
        "{y:04}-{mo:02}-{da:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// Now, formatted.
pub fn now() -> String {
    format(SystemTime::now())
}

/// Parses RFC 3339 (`Z` or `+hh:mm` offsets, optional fraction) to a time.
pub fn parse(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !(b[10] == b'T' || b[10] == b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &s[19..];
    let mut nanos = 0u32;
    if let Some(r) = rest.strip_prefix('.') {
        let digits: String = r.chars().take_while(char::is_ascii_digit).collect();
        rest = &r[digits.len()..];
        let mut padded = digits.clone();
        padded.truncate(9);
        while padded.len() < 9 {
            padded.push('0');
        }
        nanos = padded.parse().ok()?;
    }
    let offset = match rest {
        "Z" | "z" | "" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) => {
            let v = o[1..3].parse::<i64>().ok()? * 3600 + o[4..6].parse::<i64>().ok()? * 60;
            if o.starts_with('-') { -v } else { v }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se - offset;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

/// A `--since`/`--until` value: RFC 3339, unix seconds (`1700000000[.5]`) or a
/// duration before now (`10s`, `5m`, `1h30m`).
pub fn parse_since(s: &str, now: SystemTime) -> Option<SystemTime> {
    if let Some(t) = parse(s) {
        return Some(t);
    }
    if let Ok(f) = s.parse::<f64>() {
        return (f >= 0.0).then(|| UNIX_EPOCH + Duration::from_secs_f64(f));
    }
    let mut total = 0f64;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let v: f64 = num.parse().ok()?;
        num.clear();
        total += v * match c {
            's' => 1.0,
            'm' => 60.0,
            'h' => 3600.0,
            'd' => 86400.0,
            _ => return None,
        };
    }
    if !num.is_empty() || total == 0.0 && s.is_empty() {
        return None;
    }
    now.checked_sub(Duration::from_secs_f64(total))
}

/// A short "Up 5 minutes" / "3 hours ago" style text for a duration.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        2..=59 => format!("{s} seconds"),
        60..=119 => "About a minute".into(),
        120..=3599 => format!("{} minutes", s / 60),
        3600..=7199 => "About an hour".into(),
        7200..=172_799 => format!("{} hours", s / 3600),
        _ => format!("{} days", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let t = UNIX_EPOCH + Duration::new(1_764_758_400, 123_456_789);
        let s = format(t);
        assert_eq!(s, "2025-12-03T10:40:00.123456789Z");
        assert_eq!(parse(&s), Some(t));
        assert_eq!(
            parse("2025-12-03T11:40:00+01:00"),
            Some(UNIX_EPOCH + Duration::from_secs(1_764_758_400))
        );
        assert_eq!(parse("nope"), None);
    }

    #[test]
    fn since_values() {
        let now = UNIX_EPOCH + Duration::from_secs(10_000);
        assert_eq!(
            parse_since("1h", now),
            Some(UNIX_EPOCH + Duration::from_secs(6400))
        );
        assert_eq!(
            parse_since("1m30s", now),
            Some(UNIX_EPOCH + Duration::from_secs(9910))
        );
        assert_eq!(
            parse_since("5000", now),
            Some(UNIX_EPOCH + Duration::from_secs(5000))
        );
        assert_eq!(parse_since("x", now), None);
    }
}
