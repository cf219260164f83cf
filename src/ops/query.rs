//! The canary's Prometheus checks: each `[[environment.canary_query]]` asked of Prometheus's
//! HTTP API (`GET /api/v1/query`) at every analysis check, every sample judged by its `pass`.
//!
//! A query that cannot be asked (Prometheus down, a PromQL error, a timeout) or that returns
//! no sample fails the check: an analysis that cannot see is not a pass. A rate over no
//! requests is NaN and passes nothing; write `... or vector(0)` where no traffic means pass.

use serde::Deserialize;

use crate::model::CanaryQuery;

/// What one query said at one check.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryResult {
    pub name: String,
    /// The values it returned (one per series), or why there is none.
    pub values: Result<Vec<f64>, String>,
    /// Why the check fails on it, when it does.
    pub failure: Option<String>,
}

impl QueryResult {
    /// `name 0.003` (or `name 0.003, 0.1` for several series, `name ?` when it failed to
    /// answer), for the step's progress line.
    pub fn summary(&self) -> String {
        match &self.values {
            Ok(v) if !v.is_empty() => {
                let vals: Vec<String> = v.iter().map(|x| format!("{x:.4}")).collect();
                format!("{} {}", self.name, vals.join(", "))
            }
            _ => format!("{} ?", self.name),
        }
    }
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    data: Option<Data>,
    #[serde(rename = "errorType")]
    error_type: Option<String>,
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum Data {
    Vector(Vec<Series>),
    Scalar((f64, String)),
    Matrix(serde::de::IgnoredAny),
    #[serde(rename = "string")]
    Text(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
struct Series {
    value: (f64, String),
}

/// A sample's value as Prometheus writes it (`"0.5"`, `"NaN"`, `"+Inf"`).
fn number(v: &str) -> f64 {
    match v {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        _ => v.parse().unwrap_or(f64::NAN),
    }
}

/// Ask Prometheus one query (an instant query, now): the values of its samples.
pub async fn ask(
    client: &reqwest::Client,
    q: &CanaryQuery,
    canary: &str,
    stable: &str,
) -> Result<Vec<f64>, String> {
    // Under a path prefix too (`http://host/prometheus` → `…/prometheus/api/v1/query`).
    let mut url = q.url.clone();
    if !url.path().ends_with('/') {
        url.set_path(&format!("{}/", url.path()));
    }
    let mut url = url
        .join("api/v1/query")
        .map_err(|e| format!("{}: {e}", q.url))?;
    url.query_pairs_mut()
        .append_pair("query", &q.text(canary, stable));
    let resp = client
        .get(url)
        .timeout(q.timeout)
        .send()
        .await
        .map_err(|e| format!("Prometheus at {} did not answer: {e}", q.url))?;
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .map_err(|e| format!("Prometheus at {}: {e}", q.url))?;
    let answer: Answer = serde_json::from_slice(&body).map_err(|_| {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).to_string();
        format!("Prometheus at {} answered HTTP {status}: {text}", q.url)
    })?;
    if answer.status != "success" {
        return Err(format!(
            "Prometheus answered {}: {}",
            answer.error_type.unwrap_or_else(|| answer.status.clone()),
            answer.error.unwrap_or_default()
        ));
    }
    match answer.data {
        Some(Data::Vector(series)) => Ok(series.iter().map(|s| number(&s.value.1)).collect()),
        Some(Data::Scalar((_, v))) => Ok(vec![number(&v)]),
        Some(Data::Matrix(_) | Data::Text(_)) | None => {
            Err("the query must return an instant vector or a scalar".into())
        }
    }
}

/// Ask every query (all at once: a check takes as long as its slowest query, not their sum)
/// and judge its samples: every value must pass.
pub async fn check_all(
    client: &reqwest::Client,
    queries: &[CanaryQuery],
    canary: &str,
    stable: &str,
) -> Vec<QueryResult> {
    let answers =
        futures_util::future::join_all(queries.iter().map(|q| ask(client, q, canary, stable)))
            .await;
    let mut out = Vec::with_capacity(queries.len());
    for (q, values) in queries.iter().zip(answers) {
        let failure = match &values {
            Err(e) => Some(format!("query `{}`: {e}", q.name)),
            Ok(v) if v.is_empty() => Some(format!(
                "query `{}` returned no sample (add `or vector(0)` if no data means pass)",
                q.name
            )),
            Ok(v) => v
                .iter()
                .find(|x| !q.pass.holds(**x))
                .map(|x| format!("query `{}` = {x}, not {}", q.name, q.pass)),
        };
        out.push(QueryResult {
            name: q.name.clone(),
            values,
            failure,
        });
    }
    out
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_answers_read_as_values_or_errors() {
        let vector = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"slot":"green"},"value":[1700000000.1,"0.25"]},
            {"metric":{"slot":"blue"},"value":[1700000000.1,"NaN"]}]}}"#;
        let a: Answer = serde_json::from_str(vector).expect("vector");
        let Some(Data::Vector(s)) = a.data else {
            panic!("a vector")
        };
        let v: Vec<f64> = s.iter().map(|s| number(&s.value.1)).collect();
        assert_eq!(v[0], 0.25);
        assert!(v[1].is_nan());
        let scalar = r#"{"status":"success","data":{"resultType":"scalar","result":[1.5,"+Inf"]}}"#;
        let a: Answer = serde_json::from_str(scalar).expect("scalar");
        assert!(matches!(a.data, Some(Data::Scalar((_, ref v))) if number(v).is_infinite()));
        let error = r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        let a: Answer = serde_json::from_str(error).expect("error");
        assert_eq!(a.status, "error");
        assert_eq!(a.error.as_deref(), Some("parse error"));
    }
}
