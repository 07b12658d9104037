//! UTC calendar periods for budgets: the day and month a moment falls in, their labels
//! (`d2026-11-28`, `m2026-11`) and when each ends. No time-zone database: budgets reset
//! at 00:00 UTC.

/// Which window a budget covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Window {
    Daily,
    Monthly,
}

impl Window {
    pub fn as_str(self) -> &'static str {
        match self {
            Window::Daily => "daily",
            Window::Monthly => "monthly",
        }
    }
}

/// The day and month around one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Periods {
    pub day: String,
    pub month: String,
    /// Unix seconds at which the day and the month end.
    pub day_ends: i64,
    pub month_ends: i64,
}

impl Periods {
    pub fn at(unix_secs: i64) -> Periods {
        let days = unix_secs.div_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
        Periods {
            day: format!("d{y:04}-{m:02}-{d:02}"),
            month: format!("m{y:04}-{m:02}"),
            day_ends: (days + 1) * 86_400,
            month_ends: days_from_civil(ny, nm, 1) * 86_400,
        }
    }

    pub fn now() -> Periods {
        Periods::at(crate::events::now_ms().div_euclid(1000))
    }

    pub fn label(&self, window: Window) -> &str {
        match window {
            Window::Daily => &self.day,
            Window::Monthly => &self.month,
        }
    }

    pub fn ends(&self, window: Window) -> i64 {
        match window {
            Window::Daily => self.day_ends,
            Window::Monthly => self.month_ends,
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a unix time (reset times in messages).
pub fn rfc3339(unix_secs: i64) -> String {
    let (y, m, d) = civil_from_days(unix_secs.div_euclid(86_400));
    let s = unix_secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

// Howard Hinnant's days <-> civil date algorithms (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_months_and_their_ends() {
        // 2024-02-29T13:00:00Z, a leap day.
        let p = Periods::at(1_709_211_600);
        assert_eq!(p.day, "d2024-02-29");
        assert_eq!(p.month, "m2024-02");
        assert_eq!(rfc3339(p.day_ends), "2024-03-01T00:00:00Z");
        assert_eq!(rfc3339(p.month_ends), "2024-03-01T00:00:00Z");
        // 2026-12-31T23:59:59Z rolls into the next year.
        let p = Periods::at(1_798_761_599);
        assert_eq!(p.day, "d2026-12-31");
        assert_eq!(rfc3339(p.month_ends), "2027-01-01T00:00:00Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }
}
