//! Calendar dates for the report's `--since` / `--until` and its timestamps, in UTC
//! (days-from-civil arithmetic; no time zone database needed).

const DAY_MS: i64 = 86_400_000;

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Parses `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM`, `YYYY-MM-DDTHH:MM:SS` (optionally with a
/// trailing `Z`; a space works instead of `T`), all UTC. Returns epoch milliseconds and
/// whether only a date was given.
pub fn parse(text: &str) -> Result<(i64, bool), String> {
    let bad = || format!("'{text}' is not a date (YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS][Z], UTC)");
    let t = text.trim().trim_end_matches('Z');
    let (date, clock) = match t.split_once(['T', ' ']) {
        Some((d, c)) => (d, Some(c)),
        None => (t, None),
    };
    let parts: Vec<&str> = date.split('-').collect();
    let [y, m, d] = parts[..] else {
        return Err(bad());
    };
    let num = |s: &str, lo: i64, hi: i64| -> Result<i64, String> {
        let n: i64 = s.parse().map_err(|_| bad())?;
        if (lo..=hi).contains(&n) {
            Ok(n)
        } else {
            Err(bad())
        }
    };
    let (y, m, d) = (num(y, 1970, 9999)?, num(m, 1, 12)?, num(d, 1, 31)?);
    if civil_from_days(days_from_civil(y, m, d)) != (y, m, d) {
        return Err(bad());
    }
    let mut ms = days_from_civil(y, m, d) * DAY_MS;
    if let Some(clock) = clock {
        let parts: Vec<&str> = clock.split(':').collect();
        let (h, min, s) = match parts[..] {
            [h, min] => (num(h, 0, 23)?, num(min, 0, 59)?, 0),
            [h, min, s] => (num(h, 0, 23)?, num(min, 0, 59)?, num(s, 0, 60)?),
            _ => return Err(bad()),
        };
        ms += ((h * 60 + min) * 60 + s) * 1000;
    }
    Ok((ms, clock.is_none()))
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format(ms: i64) -> String {
    let (y, m, d) = civil_from_days(ms.div_euclid(DAY_MS));
    let rest = ms.rem_euclid(DAY_MS);
    let (h, min, s, milli) = (
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60,
        rest % 1000,
    );
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{milli:03}Z")
}

/// End of the day a date-only `--until` names (the whole day is included).
pub fn end_of_day(ms: i64) -> i64 {
    ms + DAY_MS
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trips_and_rejects_nonsense() {
        assert_eq!(parse("1970-01-01").unwrap(), (0, true));
        assert_eq!(parse("2026-11-28T09:15:00Z").unwrap().0, 1_795_857_300_000);
        assert_eq!(format(1_795_857_300_000), "2026-11-28T09:15:00.000Z");
        assert!(!parse("2024-02-29 23:59").unwrap().1);
        assert_eq!(
            format(parse("2024-02-29").unwrap().0),
            "2024-02-29T00:00:00.000Z"
        );
        for bad in [
            "2023-02-29",
            "2026-13-01",
            "yesterday",
            "2026-11-28T25:00",
            "",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
