//! Section 4: the criterion results of `cargo bench -p hls-core --bench pure`,
//! read from criterion's own files.

use std::path::Path;

use serde::Serialize;

use crate::figures::Figure;

/// (group/function, what it measures).
pub const BENCHES: [(&str, &str); 5] = [
    (
        "catalogue_page/parse_1000_products",
        "parse a 1,000-product catalogue page",
    ),
    (
        "push_notification/parse_created",
        "parse a push notification",
    ),
    ("tile_lookup/allowed", "tile lookup, allowed tile"),
    ("tile_lookup/not_allowed", "tile lookup, other tile"),
    (
        "tile_lookup/load_built_in_list",
        "load the 18,952-tile list (once per cold start)",
    ),
];

#[derive(Debug, Clone, Serialize)]
pub struct Result {
    pub name: &'static str,
    pub what: &'static str,
    /// Criterion's median; spread over its samples (each the mean of many iterations).
    pub time_ns: Figure,
}

pub fn report(criterion_dir: &Path) -> Vec<Result> {
    BENCHES
        .iter()
        .filter_map(|(name, what)| {
            let dir = criterion_dir.join(name).join("new");
            let read = |file: &str| -> Option<serde_json::Value> {
                serde_json::from_str(&std::fs::read_to_string(dir.join(file)).ok()?).ok()
            };
            let estimates = read("estimates.json")?;
            let sample = read("sample.json")?;
            let per_sample: Vec<f64> = sample["iters"]
                .as_array()?
                .iter()
                .zip(sample["times"].as_array()?)
                .filter_map(|(i, t)| Some(t.as_f64()? / i.as_f64()?))
                .collect();
            let mut time_ns = Figure::of("ns", per_sample);
            time_ns.median = estimates["median"]["point_estimate"].as_f64()?;
            time_ns.runs.clear();
            Some(Result {
                name,
                what,
                time_ns,
            })
        })
        .collect()
}
