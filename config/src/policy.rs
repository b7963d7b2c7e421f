//! `[[policy]]`: which users need a second factor, by directory group, per door and per
//! RADIUS client. The rules are data here; the core evaluates them
//! (`otpgate_core::policy`).

use std::fmt;

/// A door that `[[policy]]` rules can name. The portal is not one: it always asks an
/// enrolled user for a code and always lets a user without a factor set one up; it
/// only shows the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyDoor {
    /// RADIUS clients (NASes), except those marked `pam_host`.
    Radius,
    /// The PAM module: direct mode, and server mode through a client marked `pam_host`.
    Pam,
}

impl PolicyDoor {
    /// The name in the file and in status output.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyDoor::Radius => "radius",
            PolicyDoor::Pam => "pam",
        }
    }
}

/// What a rule asks of its users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecondFactor {
    /// A second factor is needed; a user without one is refused (or let through with a
    /// notice until `enroll_by`, or enrolled at the login where allowed).
    Required,
    /// A user with a factor is asked for it; one without is let in with the password.
    Optional,
    /// The password alone, even for a user who has a factor.
    Exempt,
}

impl SecondFactor {
    /// The name in the file and in status output.
    pub fn as_str(self) -> &'static str {
        match self {
            SecondFactor::Required => "required",
            SecondFactor::Optional => "optional",
            SecondFactor::Exempt => "exempt",
        }
    }
}

/// A calendar date (`YYYY-MM-DD`), read as a UTC day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date {
    /// Days since 1970-01-01.
    days: i64,
}

impl Date {
    /// Parses `YYYY-MM-DD` (a real day of the Gregorian calendar, years 1970–9999).
    pub fn parse(text: &str) -> Result<Date, String> {
        let bad = || format!("`{text}` is not a date such as \"2027-04-01\" (YYYY-MM-DD)");
        let b = text.as_bytes();
        if b.len() != 10 || b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
            return Err(bad());
        }
        let num = |r: std::ops::Range<usize>| -> Result<i64, String> {
            let part = text.get(r).ok_or_else(bad)?;
            if !part.bytes().all(|c| c.is_ascii_digit()) {
                return Err(bad());
            }
            part.parse::<i64>().map_err(|_| bad())
        };
        let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let month_len = match m {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if leap => 29,
            2 => 28,
            _ => return Err(bad()),
        };
        if y < 1970 || d < 1 || d > month_len {
            return Err(bad());
        }
        Ok(Date {
            days: days_from_civil(y, m, d),
        })
    }

    /// The UTC day that holds `unix_seconds`.
    pub fn from_unix(unix_seconds: u64) -> Date {
        Date {
            days: i64::try_from(unix_seconds / 86_400).unwrap_or(i64::MAX),
        }
    }

    /// Days since 1970-01-01.
    pub fn days(self) -> i64 {
        self.days
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = civil_from_days(self.days);
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
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

/// One validated `[[policy]]` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRule {
    /// Values of the directory's groups attribute (a DN or a group's name), compared
    /// without case; a user in any of them matches.
    pub groups: Vec<String>,
    /// The doors the rule applies to; empty: every door.
    pub doors: Vec<PolicyDoor>,
    /// RADIUS client names the rule is narrowed to; empty: every client (and PAM
    /// direct mode, which has none).
    pub clients: Vec<String>,
    pub second_factor: SecondFactor,
    /// Only with `required`: until this UTC day (exclusive), a user with no factor is
    /// let in with the password and a notice.
    pub enroll_by: Option<Date>,
    /// Only with `required`: at a door that can show a terminal (PAM direct mode), a
    /// user with no factor (after `enroll_by`) is shown a new app secret and enrolled
    /// by a code.
    pub enroll_at_login: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_parse_print_and_order() {
        assert_eq!(Date::parse("1970-01-01").unwrap().days(), 0);
        assert_eq!(Date::parse("2000-03-01").unwrap().days(), 11_017);
        for text in ["2024-02-29", "2027-04-01", "2999-12-31"] {
            assert_eq!(Date::parse(text).unwrap().to_string(), text);
        }
        assert!(Date::parse("2000-01-01").unwrap() < Date::parse("2999-01-01").unwrap());
        assert_eq!(
            Date::from_unix(1_700_000_000).to_string(),
            "2023-11-14".to_string()
        );
        for bad in [
            "2023-02-29",
            "2027-13-01",
            "2027-04-31",
            "2027-4-1",
            "27-04-01",
            "2027/04/01",
            "1969-12-31",
            "+027-04-01",
            "",
        ] {
            assert!(Date::parse(bad).is_err(), "{bad}");
        }
    }
}
