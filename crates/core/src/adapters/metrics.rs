//! CloudWatch metrics through the Embedded Metric Format: one JSON log line per
//! set of values, which CloudWatch Logs turns into metrics. No API call and no
//! permission beyond writing logs.
//! <https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>

use std::io::Write;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::config::{ConfigError, Vars};

/// `METRICS_NAMESPACE`'s default.
pub const DEFAULT_NAMESPACE: &str = "HLS/S2LinkFetcher";
/// The value of the `service` dimension every metric also carries, so that an
/// alarm can watch one metric across every platform and path.
pub const SERVICE: &str = "link-fetcher";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Seconds,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Self::Count => "Count",
            Self::Seconds => "Seconds",
        }
    }
}

/// One metric value.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub name: &'static str,
    pub unit: Unit,
    pub value: f64,
}

impl Metric {
    pub fn count(name: &'static str, value: i64) -> Self {
        Self {
            name,
            unit: Unit::Count,
            value: value as f64,
        }
    }

    pub fn seconds(name: &'static str, value: f64) -> Self {
        Self {
            name,
            unit: Unit::Seconds,
            value,
        }
    }
}

/// The EMF line for `metrics`, published under the dimension sets
/// `[platform, path]` and `[service]`.
pub fn emf_line(
    namespace: &str,
    at: DateTime<Utc>,
    platform: &str,
    path: &str,
    metrics: &[Metric],
) -> String {
    let definitions: Vec<Value> = metrics
        .iter()
        .map(|m| json!({"Name": m.name, "Unit": m.unit.as_str()}))
        .collect();
    let mut line = Map::new();
    line.insert(
        "_aws".into(),
        json!({
            "Timestamp": at.timestamp_millis(),
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [["platform", "path"], ["service"]],
                "Metrics": definitions,
            }],
        }),
    );
    line.insert("platform".into(), platform.into());
    line.insert("path".into(), path.into());
    line.insert("service".into(), SERVICE.into());
    for metric in metrics {
        // EMF values must be numbers; a NaN or infinity would make the line invalid.
        let value = if metric.value.is_finite() {
            metric.value
        } else {
            0.0
        };
        line.insert(metric.name.into(), json!(value));
    }
    Value::Object(line).to_string()
}

/// Where metric lines go: stdout in Lambda (CloudWatch Logs reads it; the
/// function's answer goes through the runtime API, not stdout), nowhere on the
/// command line unless `METRICS_EMF=on` (then stderr, beside the logs).
#[derive(Debug, Clone)]
pub struct Metrics {
    namespace: String,
    sink: Sink,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sink {
    Off,
    Stdout,
    Stderr,
}

impl Metrics {
    /// `METRICS_NAMESPACE` (default [`DEFAULT_NAMESPACE`]) and `METRICS_EMF`
    /// (`on`/`off`; default on in Lambda, off elsewhere).
    pub fn read(vars: &Vars, in_lambda: bool) -> Result<Self, ConfigError> {
        let namespace: String = vars.optional("METRICS_NAMESPACE", DEFAULT_NAMESPACE.to_owned())?;
        let enabled = match vars.optional("METRICS_EMF", String::new())?.as_str() {
            "" => in_lambda,
            "on" | "true" | "1" => true,
            "off" | "false" | "0" => false,
            other => {
                return Err(ConfigError::Malformed {
                    name: "METRICS_EMF",
                    reason: format!("{other:?} is not on or off"),
                });
            }
        };
        let sink = match (enabled, in_lambda) {
            (false, _) => Sink::Off,
            (true, true) => Sink::Stdout,
            (true, false) => Sink::Stderr,
        };
        Ok(Self { namespace, sink })
    }

    /// No metrics (tests, dry runs).
    pub fn off() -> Self {
        Self {
            namespace: DEFAULT_NAMESPACE.into(),
            sink: Sink::Off,
        }
    }

    pub fn emit(&self, platform: &str, path: &str, metrics: &[Metric]) {
        if self.sink == Sink::Off || metrics.is_empty() {
            return;
        }
        let mut line = emf_line(&self.namespace, Utc::now(), platform, path, metrics);
        line.push('\n');
        // One write per line, so that it never interleaves with a log line.
        let _ = match self.sink {
            Sink::Stdout => std::io::stdout().lock().write_all(line.as_bytes()),
            Sink::Stderr => std::io::stderr().lock().write_all(line.as_bytes()),
            Sink::Off => Ok(()),
        };
    }
}

/// The median and 99th percentile of `values` by nearest rank (a value that
/// occurred), or `None` for no values.
pub fn median_and_p99(values: &[f64]) -> Option<(f64, f64)> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = |q: f64| {
        let index = (q * sorted.len() as f64).ceil() as usize;
        sorted[index.clamp(1, sorted.len()) - 1]
    };
    Some((rank(0.5), rank(0.99)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        assert_eq!(median_and_p99(&[]), None);
        assert_eq!(median_and_p99(&[7.0]), Some((7.0, 7.0)));
        assert_eq!(median_and_p99(&[4.0, 1.0, 3.0, 2.0]), Some((2.0, 4.0)));
        let hundred: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(median_and_p99(&hundred), Some((50.0, 99.0)));
        let thousand: Vec<f64> = (1..=1000).map(f64::from).collect();
        assert_eq!(median_and_p99(&thousand), Some((500.0, 990.0)));
    }

    #[test]
    fn metrics_go_to_stdout_in_lambda_and_nowhere_on_the_command_line_by_default() {
        let vars = |pairs: &[(&str, &str)]| -> Vars { pairs.iter().copied().collect() };
        assert_eq!(Metrics::read(&vars(&[]), true).unwrap().sink, Sink::Stdout);
        assert_eq!(Metrics::read(&vars(&[]), false).unwrap().sink, Sink::Off);
        let on = Metrics::read(
            &vars(&[("METRICS_EMF", "on"), ("METRICS_NAMESPACE", "X")]),
            false,
        )
        .unwrap();
        assert_eq!((on.sink, on.namespace.as_str()), (Sink::Stderr, "X"));
        assert_eq!(
            Metrics::read(&vars(&[("METRICS_EMF", "maybe")]), true)
                .unwrap_err()
                .to_string(),
            r#"METRICS_EMF is malformed: "maybe" is not on or off"#
        );
    }

    #[test]
    fn a_line_carries_its_dimensions_and_values() {
        let at: DateTime<Utc> = "2024-04-01T12:00:00Z".parse().unwrap();
        let line = emf_line(
            "HLS/Test",
            at,
            "S2A",
            "poll",
            &[
                Metric::count("NewGranules", 12),
                Metric::seconds("QueueDelayP99", f64::NAN),
            ],
        );
        let value: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["_aws"]["Timestamp"], 1_711_972_800_000i64);
        assert_eq!(value["platform"], "S2A");
        assert_eq!(value["NewGranules"], 12.0);
        assert_eq!(value["QueueDelayP99"], 0.0);
        assert!(!line.contains('\n'));
    }
}
