//! The one duration syntax: a whole number and a unit, `30s`, `10m`, `1h`,
//! `2d`. A bare number is seconds; the policy grammar always asks for the
//! unit, the CLI (`block --timeout 90`) and the REST API accept it bare.

/// Why a text is not a duration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DurationError {
    /// It does not start with a number.
    NoNumber,
    /// A unit other than s, m, h or d.
    UnknownUnit(String),
    /// More seconds than a u64 holds.
    TooLarge,
}

/// Seconds per unit, as a policy or the CLI writes them.
pub const UNITS: [(&str, u64); 4] = [("s", 1), ("m", 60), ("h", 3600), ("d", 86_400)];

/// `text` as seconds.
pub fn seconds(text: &str) -> Result<u64, DurationError> {
    let (digits, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    if digits.is_empty() {
        return Err(DurationError::NoNumber);
    }
    let per_unit = match unit {
        "" => 1,
        _ => UNITS.iter().find(|(u, _)| *u == unit).map(|(_, s)| *s).ok_or(DurationError::UnknownUnit(unit.into()))?,
    };
    let count: u64 = digits.parse().map_err(|_| DurationError::TooLarge)?;
    count.checked_mul(per_unit).ok_or(DurationError::TooLarge)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_accepted_form() {
        // Policies write a unit; the CLI and the API also take bare seconds.
        let accepted =
            [("90", 90), ("0", 0), ("0s", 0), ("45s", 45), ("10m", 600), ("1h", 3600), ("2d", 172_800), ("007m", 420)];
        for (text, secs) in accepted {
            assert_eq!(seconds(text), Ok(secs), "{text}");
        }
        assert_eq!(seconds("18446744073709551615"), Ok(u64::MAX));
    }

    #[test]
    fn every_refused_form() {
        for text in ["", "s", "h1", "-5s", " 5s", "1.5h"] {
            assert!(seconds(text).is_err(), "{text}");
        }
        assert_eq!(seconds("1w"), Err(DurationError::UnknownUnit("w".into())));
        assert_eq!(seconds("5 s"), Err(DurationError::UnknownUnit(" s".into())));
        assert_eq!(seconds("1h30m"), Err(DurationError::UnknownUnit("h30m".into())));
        assert_eq!(seconds("1S"), Err(DurationError::UnknownUnit("S".into())), "units are lower case");
        assert_eq!(seconds("x"), Err(DurationError::NoNumber));
        assert_eq!(seconds("18446744073709551616"), Err(DurationError::TooLarge));
        assert_eq!(seconds("213503982334602d"), Err(DurationError::TooLarge));
    }
}
