//! Argument values that need more than clap's built-in parsers: JSON payloads given inline
//! or as `@file.json`, points in time and durations.

use std::io::Read as _;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

use super::CliError;

/// A JSON payload as given on the command line: inline JSON, `@path` to a JSON file, or
/// `@-` for standard input. Read and checked when the command runs, so a bad file is an
/// error that names the file (exit status 1), not a usage error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload(String);

impl FromStr for Payload {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl Payload {
    /// `resolve` for an optional argument.
    pub(super) fn resolve_opt(p: Option<&Self>, option: &str) -> Result<Option<String>, CliError> {
        p.map(|p| p.resolve(option)).transpose()
    }

    /// The payload's JSON text as given (trimmed), after checking it is JSON. `option` names the
    /// flag in error messages (`--input`).
    pub(super) fn resolve(&self, option: &str) -> Result<String, CliError> {
        let (text, source) = match self.0.strip_prefix('@') {
            Some("-") => {
                let mut text = String::new();
                std::io::stdin().read_to_string(&mut text).map_err(|err| {
                    CliError::Input(format!("{option} @-: cannot read standard input: {err}"))
                })?;
                (text, "standard input".to_owned())
            }
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|err| {
                    CliError::Input(format!("{option} @{path}: cannot read {path}: {err}"))
                })?;
                (text, format!("file {path}"))
            }
            None => (self.0.clone(), "the value".to_owned()),
        };
        serde_json::from_str::<serde_json::Value>(&text).map_err(|err| {
            let hint = if self.0.starts_with('@') {
                String::new()
            } else {
                " (to pass a string, quote it: '\"text\"')".to_owned()
            };
            CliError::Input(format!("{option}: {source} is not valid JSON: {err}{hint}"))
        })?;
        Ok(text.trim().to_owned())
    }
}

/// A point in time: RFC 3339 (`2024-05-01T10:00:00Z`, `...+02:00`), or a UTC date or
/// date-time without zone (`2024-05-01`, `2024-05-01T10:00`, `2024-05-01 10:00:30`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateTimeArg(pub DateTime<Utc>);

impl FromStr for DateTimeArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Ok(t) = DateTime::parse_from_rfc3339(s) {
            return Ok(Self(t.with_timezone(&Utc)));
        }
        for format in [
            "%Y-%m-%dT%H:%M:%S%.f",
            "%Y-%m-%d %H:%M:%S%.f",
            "%Y-%m-%dT%H:%M",
            "%Y-%m-%d %H:%M",
        ] {
            if let Ok(t) = NaiveDateTime::parse_from_str(s, format) {
                return Ok(Self(t.and_utc()));
            }
        }
        if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
            return Ok(Self(d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc()));
        }
        Err("expected RFC 3339 (2024-05-01T10:00:00Z) or a UTC date[-time] (2024-05-01, 2024-05-01T10:00)".into())
    }
}

impl DateTimeArg {
    pub(super) fn timestamp(self) -> prost_types::Timestamp {
        prost_types::Timestamp {
            seconds: self.0.timestamp(),
            nanos: i32::try_from(self.0.timestamp_subsec_nanos()).unwrap_or(0),
        }
    }
}

/// A duration: plain seconds (`90`) or a number with a unit (`500ms`, `90s`, `5m`, `2h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationArg(pub Duration);

impl FromStr for DurationArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, unit) = s.split_at(split);
        let n: u64 = digits.parse().map_err(|_| {
            format!("expected a duration such as 90, 90s, 500ms, 5m or 2h, got {s:?}")
        })?;
        let d = match unit {
            "" | "s" => Duration::from_secs(n),
            "ms" => Duration::from_millis(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            other => return Err(format!("unknown unit {other:?}: use ms, s, m or h")),
        };
        Ok(Self(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            "90".parse::<DurationArg>().unwrap().0,
            Duration::from_secs(90)
        );
        assert_eq!(
            "500ms".parse::<DurationArg>().unwrap().0,
            Duration::from_millis(500)
        );
        assert_eq!(
            "5m".parse::<DurationArg>().unwrap().0,
            Duration::from_secs(300)
        );
        assert_eq!(
            "2h".parse::<DurationArg>().unwrap().0,
            Duration::from_secs(7200)
        );
        assert!("soon".parse::<DurationArg>().is_err());
        assert!("5d".parse::<DurationArg>().is_err());
    }

    #[test]
    fn date_times() {
        let t = |s: &str| s.parse::<DateTimeArg>().unwrap().0.to_rfc3339();
        assert_eq!(t("2024-05-01T10:00:00Z"), "2024-05-01T10:00:00+00:00");
        assert_eq!(t("2024-05-01T12:00:00+02:00"), "2024-05-01T10:00:00+00:00");
        assert_eq!(t("2024-05-01T10:00"), "2024-05-01T10:00:00+00:00");
        assert_eq!(t("2024-05-01 10:00:30"), "2024-05-01T10:00:30+00:00");
        assert_eq!(t("2024-05-01"), "2024-05-01T00:00:00+00:00");
        assert!("05/01/2024".parse::<DateTimeArg>().is_err());
    }

    #[test]
    fn payloads() {
        let p = |s: &str| s.parse::<Payload>().unwrap().resolve("--input");
        assert_eq!(p(r#" {"b": 1, "a": 2}"#).unwrap(), r#"{"b": 1, "a": 2}"#);
        assert_eq!(p("\"hi\"").unwrap(), "\"hi\"");
        let err = p("hi").unwrap_err().to_string();
        assert!(
            err.contains("--input") && err.contains("not valid JSON"),
            "{err}"
        );
        let err = p("@/no/such/file.json").unwrap_err().to_string();
        assert!(err.contains("/no/such/file.json"), "{err}");
    }
}
