//! Time formatting and the serde helpers for times and durations in configs and JSON.
//!
//! Times on screen and in the audit log are UTC, as incident timelines usually are.

use std::time::{Duration, SystemTime};

/// `2026-11-23T11:21:05Z`
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// `11:21:05` (UTC), for the event pane.
pub fn clock(t: SystemTime) -> String {
    let s = rfc3339(t);
    s.get(11..19).unwrap_or(&s).to_string()
}

/// A short "how long ago": `4s`, `12m`, `3h`, `2d`.
pub fn ago(now: SystemTime, then: SystemTime) -> String {
    let secs = now.duration_since(then).unwrap_or_default().as_secs();
    short_secs(secs)
}

pub fn short_secs(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m", secs / 60),
        3600..=86_399 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// `12ms`, `1.4s`
pub fn millis(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// Deserialize a duration written as `"2s"`, `"500ms"`, `"1m 30s"`.
pub mod serde_duration {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};
    use std::time::Duration;

    /// The longest duration a config may give (7 days): longer ones are typos, and a time
    /// limit far in the future cannot be computed.
    pub const MAX: Duration = Duration::from_secs(7 * 24 * 3600);

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        let v = humantime::parse_duration(&s).map_err(|e| {
            D::Error::custom(format!(
                "`{s}` is not a duration ({e}); write it like \"2s\", \"500ms\" or \"1m 30s\""
            ))
        })?;
        if v > MAX {
            return Err(D::Error::custom(format!(
                "`{s}` is longer than the 7 days a duration may be"
            )));
        }
        Ok(v)
    }

    pub fn serialize<S: Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*v).to_string())
    }
}

/// An optional duration in a config (`#[serde(default, deserialize_with = ...)]`), written as
/// [`serde_duration`] reads it.
pub mod serde_duration_opt {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    #[derive(Deserialize)]
    struct Written(#[serde(with = "super::serde_duration")] Duration);

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<Written>::deserialize(d)?.map(|w| w.0))
    }
}

pub mod serde_system_time {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};
    use std::time::SystemTime;

    pub fn serialize<S: Serializer>(v: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_rfc3339_millis(*v).to_string())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_rfc3339_weak(&s).map_err(D::Error::custom)
    }
}

pub mod serde_opt_duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(d) => s.serialize_some(&(d.as_secs_f64() * 1000.0)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let v = Option::<f64>::deserialize(d)?;
        Ok(v.map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1000.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_read_as_an_operator_expects() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40Z");
        assert_eq!(clock(t), "11:06:40");
        assert_eq!(ago(t + Duration::from_secs(125), t), "2m");
        assert_eq!(millis(Duration::from_millis(12)), "12ms");
        assert_eq!(millis(Duration::from_millis(1400)), "1.4s");
    }
}
