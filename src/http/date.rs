//! The `Date` header's value (RFC 9110 section 6.6.1, IMF-fixdate), formatted at most once a second.
//!
//! Invariant: `as_bytes()` is always a well-formed 29-byte IMF-fixdate for the last second
//! passed to `refresh`. Formatting a date per request would cost more than parsing the request.

use std::time::{SystemTime, UNIX_EPOCH};

const LEN: usize = 29; // "Sun, 06 Nov 1994 08:49:37 GMT"

/// The cached text of the current second.
pub struct HttpDate {
    secs: u64,
    text: [u8; LEN],
}

impl HttpDate {
    pub fn new() -> Self {
        let mut date = HttpDate { secs: u64::MAX, text: [b' '; LEN] };
        date.refresh(SystemTime::now());
        date
    }

    /// Re-formats only when `now` falls in a different second from the cached one.
    pub fn refresh(&mut self, now: SystemTime) {
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if secs != self.secs {
            self.secs = secs;
            self.text = format_imf_fixdate(secs);
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.text
    }
}

impl Default for HttpDate {
    fn default() -> Self {
        Self::new()
    }
}

fn format_imf_fixdate(unix_secs: u64) -> [u8; LEN] {
    const WEEKDAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] =
        [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"];
    let days = unix_secs / 86_400;
    let secs_of_day = unix_secs % 86_400;
    let (year, month, day) = civil_from_days(days);

    let mut out = [0u8; LEN];
    out[..3].copy_from_slice(WEEKDAYS[(days % 7) as usize]); // 1970-01-01 was a Thursday
    out[3..5].copy_from_slice(b", ");
    two_digits(&mut out[5..7], day);
    out[7] = b' ';
    out[8..11].copy_from_slice(MONTHS[(month - 1) as usize]);
    out[11] = b' ';
    two_digits(&mut out[12..14], year / 100);
    two_digits(&mut out[14..16], year % 100);
    out[16] = b' ';
    two_digits(&mut out[17..19], secs_of_day / 3600);
    out[19] = b':';
    two_digits(&mut out[20..22], secs_of_day / 60 % 60);
    out[22] = b':';
    two_digits(&mut out[23..25], secs_of_day % 60);
    out[25..].copy_from_slice(b" GMT");
    out
}

fn two_digits(out: &mut [u8], n: u64) {
    out[0] = b'0' + (n / 10 % 10) as u8;
    out[1] = b'0' + (n % 10) as u8;
}

/// Days since 1970-01-01 to (year, month 1..=12, day 1..=31): Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> String {
        String::from_utf8(format_imf_fixdate(secs).to_vec()).unwrap()
    }

    #[test]
    fn formats_known_dates() {
        assert_eq!(at(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(at(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT"); // RFC 9110's example
        assert_eq!(at(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(at(4_102_444_799), "Thu, 31 Dec 2099 23:59:59 GMT");
    }

    #[test]
    fn refreshes_only_on_a_new_second() {
        let mut date = HttpDate::new();
        date.refresh(UNIX_EPOCH + Duration::from_millis(784_111_777_100));
        let first = date.as_bytes().to_vec();
        date.refresh(UNIX_EPOCH + Duration::from_millis(784_111_777_900));
        assert_eq!(date.as_bytes(), &first[..]);
        date.refresh(UNIX_EPOCH + Duration::from_secs(784_111_778));
        assert_eq!(date.as_bytes(), b"Sun, 06 Nov 1994 08:49:38 GMT");
    }
}
