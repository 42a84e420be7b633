//! Value conversions between OCI (v1-shaped) resources and cgroup v2 files.
//!
//! The formulas are the ones runc and crun use, so a config gives the same kernel values
//! under every runtime.

/// `cpu.shares` (2..=262144) -> `cpu.weight` (1..=10000).
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    let s = shares.clamp(2, 262_144);
    1 + ((s - 2) * 9999) / 262_142
}

/// OCI quota/period -> the `cpu.max` line ("max 100000", "50000 100000"), or `None` when
/// neither is set.
pub fn cpu_max(quota: Option<i64>, period: Option<u64>) -> Option<String> {
    let quota = quota.unwrap_or(0);
    let period = period.unwrap_or(0);
    if quota == 0 && period == 0 {
        return None;
    }
    let mut s = if quota > 0 {
        quota.to_string()
    } else {
        "max".to_string()
    };
    if period != 0 {
        s.push(' ');
        s.push_str(&period.to_string());
    }
    Some(s)
}

/// blkio weight (10..=1000) -> `io.weight` (1..=10000).
pub fn blkio_weight_to_io_weight(w: u64) -> u64 {
    if w == 0 {
        return 0;
    }
    let w = w.clamp(10, 1000);
    1 + (w - 10) * 9999 / 990
}

/// OCI `memory.swap` is memory+swap (the v1 memsw meaning); cgroup v2 limits swap alone.
/// Returns the `memory.swap.max` value (-1 = "max"), `Ok(None)` when nothing is to be
/// written, or why the pair is invalid.
pub fn swap_to_v2(swap: Option<i64>, limit: Option<i64>) -> Result<Option<i64>, String> {
    let limit = limit.unwrap_or(0);
    let swap = match swap {
        None | Some(0) => {
            // Like v1: an unlimited memory with no swap given makes swap unlimited too.
            return Ok((limit == -1).then_some(-1));
        }
        Some(s) => s,
    };
    if swap == -1 {
        return Ok(Some(-1));
    }
    if swap < 0 {
        return Err(format!("invalid memory+swap value {swap}"));
    }
    if limit == 0 || limit == -1 {
        return Err("a swap limit needs a memory limit".into());
    }
    if limit < 0 {
        return Err(format!("invalid memory limit {limit}"));
    }
    if swap < limit {
        return Err(format!(
            "memory+swap ({swap}) must be at least the memory limit ({limit})"
        ));
    }
    Ok(Some(swap - limit))
}

/// A v2 byte value: negative means unlimited ("max").
pub fn v2_bytes(v: i64) -> String {
    if v < 0 {
        "max".to_string()
    } else {
        v.to_string()
    }
}

/// `true` if a hugepage size string is of the kernel's form ("2MB", "1GB", "64KB"), so it
/// can be put in a file name safely.
pub fn valid_page_size(s: &str) -> bool {
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &s[digits.len()..];
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && matches!(unit, "KB" | "MB" | "GB" | "TB")
}

/// The kernel's hugepage size names ("2MB", "1GB") from /sys/kernel/mm/hugepages entries
/// ("hugepages-2048kB").
pub fn page_size_name(dir_name: &str) -> Option<String> {
    let kb: u64 = dir_name
        .strip_prefix("hugepages-")?
        .strip_suffix("kB")?
        .parse()
        .ok()?;
    Some(if kb >= 1 << 20 && kb.is_multiple_of(1 << 20) {
        format!("{}GB", kb >> 20)
    } else if kb >= 1 << 10 && kb.is_multiple_of(1 << 10) {
        format!("{}MB", kb >> 10)
    } else {
        format!("{kb}KB")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_from_shares() {
        assert_eq!(shares_to_weight(0), 0);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1), 1);
        assert_eq!(shares_to_weight(1 << 30), 10_000);
    }

    #[test]
    fn cpu_max_lines() {
        assert_eq!(cpu_max(None, None), None);
        assert_eq!(
            cpu_max(Some(50_000), Some(100_000)).unwrap(),
            "50000 100000"
        );
        assert_eq!(cpu_max(Some(-1), Some(100_000)).unwrap(), "max 100000");
        assert_eq!(cpu_max(Some(20_000), None).unwrap(), "20000");
        assert_eq!(cpu_max(None, Some(250_000)).unwrap(), "max 250000");
    }

    #[test]
    fn io_weight() {
        assert_eq!(blkio_weight_to_io_weight(10), 1);
        assert_eq!(blkio_weight_to_io_weight(1000), 10_000);
        assert_eq!(blkio_weight_to_io_weight(500), 4950);
    }

    #[test]
    fn swap_conversion() {
        assert_eq!(swap_to_v2(None, Some(100)), Ok(None));
        assert_eq!(swap_to_v2(None, Some(-1)), Ok(Some(-1)));
        assert_eq!(swap_to_v2(Some(-1), Some(100)), Ok(Some(-1)));
        assert_eq!(swap_to_v2(Some(300), Some(100)), Ok(Some(200)));
        assert_eq!(swap_to_v2(Some(100), Some(100)), Ok(Some(0)));
        assert!(swap_to_v2(Some(50), Some(100)).is_err());
        assert!(swap_to_v2(Some(50), None).is_err());
    }

    #[test]
    fn page_sizes() {
        assert!(valid_page_size("2MB"));
        assert!(valid_page_size("1GB"));
        assert!(!valid_page_size("2M"));
        assert!(!valid_page_size("../x"));
        assert!(!valid_page_size("MB"));
        assert_eq!(page_size_name("hugepages-2048kB").unwrap(), "2MB");
        assert_eq!(page_size_name("hugepages-1048576kB").unwrap(), "1GB");
        assert_eq!(page_size_name("hugepages-64kB").unwrap(), "64KB");
    }
}
