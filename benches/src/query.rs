//! The query timer: sends one query over HTTP a few times to warm up, then
//! `runs` times on the clock, and reports the median latency and the size of
//! the answer, so a query that fails or returns nothing is not mistaken for a
//! fast one.
//!
//! A run is timed from sending the request until the whole body is read, on
//! one keep-alive connection. The answer is checked (HTTP status, error
//! fields) after the clock stops, for every run.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::json::{self, Json};

/// Which answer format to expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Sluice `/api/v1/sql` with `format=json`: `{"columns":…,"rows":[[…]…]}`.
    Sluice,
    /// InfluxDB 1.x `/query`: `{"results":[{"series":[{"values":[[…]…]}]}]}`.
    Influx,
    /// Prometheus API (VictoriaMetrics): `{"status":"success","data":{…}}`.
    Prom,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    Get,
    Post,
}

pub struct QueryArgs {
    pub url: String,
    pub method: Method,
    pub params: Vec<(String, String)>,
    pub kind: Kind,
    pub warmup: usize,
    pub runs: usize,
    pub timeout: Duration,
}

/// What an answer held.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Shape {
    /// Rows as SQL would count them. Prometheus: distinct (timestamp, labels
    /// without `__name__`) pairs, so ten metrics of one host at one time are one row.
    pub rows: usize,
    /// Series (InfluxDB, Prometheus); 1 for Sluice.
    pub series: usize,
    /// Individual values: Prometheus samples, or cells for the others.
    pub points: usize,
    /// The last cell of the first row (e.g. a count), as text.
    pub first: Option<String>,
}

pub fn parse_param(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("--param {s:?}: expected key=value"))
}

fn no_proxy_client(timeout: Duration) -> Result<reqwest::blocking::Client, String> {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .pool_max_idle_per_host(1)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| format!("building the HTTP client: {e}"))
}

fn excerpt(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    let s = s.trim();
    if s.chars().count() > 400 {
        format!("{}…", s.chars().take(400).collect::<String>())
    } else {
        s.to_string()
    }
}

/// Counts the rows of an answer; an error when the answer reports one.
pub fn shape(kind: Kind, body: &[u8]) -> Result<Shape, String> {
    let v = json::parse(body).map_err(|e| format!("{e}; body: {}", excerpt(body)))?;
    let err = |e: &Json| format!("the answer reports an error: {}", e.text());
    match kind {
        Kind::Sluice => {
            if let Some(e) = v.get("error") {
                return Err(err(e));
            }
            let rows = v
                .get("rows")
                .and_then(Json::arr)
                .ok_or_else(|| format!("no \"rows\" in {}", excerpt(body)))?;
            Ok(Shape {
                rows: rows.len(),
                series: 1,
                points: rows.iter().filter_map(Json::arr).map(<[Json]>::len).sum(),
                first: rows
                    .first()
                    .and_then(Json::arr)
                    .and_then(<[Json]>::last)
                    .map(Json::text),
            })
        }
        Kind::Influx => {
            if let Some(e) = v.get("error") {
                return Err(err(e));
            }
            let results = v
                .get("results")
                .and_then(Json::arr)
                .ok_or_else(|| format!("no \"results\" in {}", excerpt(body)))?;
            let mut s = Shape::default();
            for r in results {
                if let Some(e) = r.get("error") {
                    return Err(err(e));
                }
                for series in r.get("series").and_then(Json::arr).unwrap_or_default() {
                    s.series += 1;
                    let values = series.get("values").and_then(Json::arr).unwrap_or_default();
                    s.rows += values.len();
                    s.points += values
                        .iter()
                        .filter_map(Json::arr)
                        .map(<[Json]>::len)
                        .sum::<usize>();
                    if s.first.is_none() {
                        s.first = values
                            .first()
                            .and_then(Json::arr)
                            .and_then(<[Json]>::last)
                            .map(Json::text);
                    }
                }
            }
            Ok(s)
        }
        Kind::Prom => {
            if v.get("status").and_then(Json::str) != Some("success") {
                return Err(format!("the answer is not a success: {}", excerpt(body)));
            }
            let data = v.get("data").ok_or("no \"data\"")?;
            let result = data.get("result").ok_or("no \"data.result\"")?;
            // Labels other than the metric name, as one comparable string.
            let labels = |r: &Json| -> String {
                match r.get("metric") {
                    Some(Json::Obj(kv)) => {
                        let mut kv: Vec<String> = kv
                            .iter()
                            .filter(|(k, _)| k != "__name__")
                            .map(|(k, v)| format!("{k}={}", v.text()))
                            .collect();
                        kv.sort();
                        kv.join(",")
                    }
                    _ => String::new(),
                }
            };
            let mut rows = HashSet::new();
            let mut s = Shape::default();
            match data.get("resultType").and_then(Json::str) {
                Some("matrix") => {
                    for r in result.arr().unwrap_or_default() {
                        s.series += 1;
                        let l = labels(r);
                        let values = r.get("values").and_then(Json::arr).unwrap_or_default();
                        for p in values {
                            let t = p.arr().and_then(<[Json]>::first).map(Json::text);
                            rows.insert((t, l.clone()));
                            s.points += 1;
                        }
                        if s.first.is_none() {
                            s.first = values
                                .first()
                                .and_then(Json::arr)
                                .and_then(<[Json]>::last)
                                .map(Json::text);
                        }
                    }
                }
                Some("vector") => {
                    for r in result.arr().unwrap_or_default() {
                        s.series += 1;
                        s.points += 1;
                        let p = r.get("value").and_then(Json::arr).unwrap_or_default();
                        rows.insert((p.first().map(Json::text), labels(r)));
                        if s.first.is_none() {
                            s.first = p.last().map(Json::text);
                        }
                    }
                }
                Some("scalar") => {
                    s.series = 1;
                    s.points = 1;
                    rows.insert((None, String::new()));
                    s.first = result.arr().and_then(<[Json]>::last).map(Json::text);
                }
                other => return Err(format!("unexpected resultType {other:?}")),
            }
            s.rows = rows.len();
            Ok(s)
        }
    }
}

pub fn run(a: &QueryArgs) -> Result<(), String> {
    if a.runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    let client = no_proxy_client(a.timeout)?;
    let once = || -> Result<(Duration, usize, Shape), String> {
        let req = match a.method {
            Method::Get => client.get(&a.url),
            Method::Post => client.post(&a.url),
        }
        .query(&a.params);
        let started = Instant::now();
        let resp = req.send().map_err(|e| format!("{}: {e}", a.url))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .map_err(|e| format!("{}: reading the answer: {e}", a.url))?;
        let took = started.elapsed();
        if !status.is_success() {
            return Err(format!("{}: HTTP {status}: {}", a.url, excerpt(&body)));
        }
        let s = shape(a.kind, &body)?;
        Ok((took, body.len(), s))
    };
    let mut first: Option<(usize, Shape)> = None;
    for _ in 0..a.warmup {
        let (_, bytes, s) = once()?;
        first.get_or_insert((bytes, s));
    }
    let mut times = Vec::with_capacity(a.runs);
    for _ in 0..a.runs {
        let (t, bytes, s) = once()?;
        // Every run must give the same answer size as the first one.
        match &first {
            Some((_, f)) if f.rows != s.rows => {
                return Err(format!(
                    "the answer changed between runs: {} rows, then {}",
                    f.rows, s.rows
                ))
            }
            Some(_) => {}
            None => first = Some((bytes, s)),
        }
        times.push(t.as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    let median = if times.len() % 2 == 1 {
        times[times.len() / 2]
    } else {
        (times[times.len() / 2 - 1] + times[times.len() / 2]) / 2.0
    };
    let (bytes, s) = first.expect("at least one run");
    println!(
        "RESULT median_ms={median:.3} min_ms={:.3} max_ms={:.3} runs={} rows={} series={} points={} bytes={bytes} first={}",
        times[0],
        times[times.len() - 1],
        times.len(),
        s.rows,
        s.series,
        s.points,
        s.first.as_deref().unwrap_or("-").replace(char::is_whitespace, "_"),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let s = shape(
            Kind::Sluice,
            br#"{"columns":[{"name":"c","type":"Int64"}],"rows":[[864000]]}"#,
        )
        .unwrap();
        assert_eq!((s.rows, s.first.as_deref()), (1, Some("864000")));
        assert!(shape(Kind::Sluice, br#"{"columns":[],"rows":[],"error":"boom"}"#).is_err());

        let s = shape(
            Kind::Influx,
            br#"{"results":[{"statement_id":0,"series":[
                {"name":"cpu","tags":{"hostname":"host_0"},"columns":["time","mean"],"values":[["t1",1.5],["t2",2]]},
                {"name":"cpu","tags":{"hostname":"host_1"},"columns":["time","mean"],"values":[["t1",3]]}]}]}"#,
        )
        .unwrap();
        assert_eq!((s.rows, s.series, s.first.as_deref()), (3, 2, Some("1.5")));
        assert!(shape(
            Kind::Influx,
            br#"{"results":[{"statement_id":0,"error":"bad"}]}"#
        )
        .is_err());
        let s = shape(Kind::Influx, br#"{"results":[{"statement_id":0}]}"#).unwrap();
        assert_eq!(s.rows, 0);

        // Two metrics of one host at the same times: two rows, not four.
        let s = shape(
            Kind::Prom,
            br#"{"status":"success","data":{"resultType":"matrix","result":[
                {"metric":{"__name__":"cpu_a","hostname":"h0"},"values":[[1,"1"],[2,"2"]]},
                {"metric":{"__name__":"cpu_b","hostname":"h0"},"values":[[1,"3"],[2,"4"]]}]}}"#,
        )
        .unwrap();
        assert_eq!((s.rows, s.series, s.points), (2, 2, 4));
        let s = shape(
            Kind::Prom,
            br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1451692800,"864000"]}]}}"#,
        )
        .unwrap();
        assert_eq!((s.rows, s.first.as_deref()), (1, Some("864000")));
        assert!(shape(Kind::Prom, br#"{"status":"error","error":"x"}"#).is_err());
    }
}
