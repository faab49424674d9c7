//! Timestamps in the Docker API's RFC 3339 form with nanoseconds.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in time, serialized as `2026-11-21T23:03:43.404601457Z`; the zero
/// value is Go's zero time `0001-01-01T00:00:00Z`, as Docker prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub Option<SystemTime>);

const GO_ZERO: &str = "0001-01-01T00:00:00Z";

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        Timestamp(Some(SystemTime::now()))
    }

    /// Whether this is the zero time.
    pub fn is_zero(&self) -> bool {
        self.0.is_none()
    }

    /// Time elapsed since this timestamp (zero for the zero time or the future).
    pub fn elapsed(&self) -> Duration {
        self.0
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .unwrap_or_default()
    }

    /// Nanoseconds since the Unix epoch (0 for the zero time).
    pub fn unix_nanos(&self) -> u128 {
        self.0
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    }

    /// RFC 3339 with nanoseconds.
    pub fn to_rfc3339(&self) -> String {
        match self.0 {
            Some(t) if t >= UNIX_EPOCH => humantime::format_rfc3339_nanos(t).to_string(),
            _ => GO_ZERO.to_string(),
        }
    }

    /// Parses RFC 3339 (any fractional precision); Go's zero time gives the zero value.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.starts_with("0001-01-01") {
            return Ok(Timestamp(None));
        }
        humantime::parse_rfc3339(s)
            .map(|t| Timestamp(Some(t)))
            .map_err(|e| format!("invalid timestamp {s:?}: {e}"))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Formatted straight into the output: a snapshot writes two of
        // these per object, and a `String` each cost about a quarter of its encoding.
        match self.0 {
            Some(t) if t >= UNIX_EPOCH => s.collect_str(&humantime::format_rfc3339_nanos(t)),
            _ => s.serialize_str(GO_ZERO),
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_nanoseconds() {
        let t = Timestamp::parse("2026-11-21T23:03:43.404601457Z").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-21T23:03:43.404601457Z");
        let json = serde_json::to_string(&t).unwrap();
        let back: Timestamp = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn zero_is_go_zero_time() {
        assert_eq!(Timestamp::default().to_rfc3339(), GO_ZERO);
        assert!(Timestamp::parse(GO_ZERO).unwrap().is_zero());
    }
}
