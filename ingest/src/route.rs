//! Message routing shared by the MQTT and Kafka front ends: which database
//! and table a message lands in, how its payload becomes rows, and the MQTT
//! topic patterns whose `{name}` levels capture tags.

use serde::{Deserialize, Serialize};
use sluice_engine::Catalog;

use crate::error::IngestError;
use crate::json::{JsonMapping, TimeField};
use crate::lp::{Precision, WriteOptions};
use crate::rows::{Prepared, RowSink};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    #[default]
    LineProtocol,
    Json,
}

/// Where messages go and how their payload maps to rows. MQTT routes name
/// a topic `filter`, Kafka routes a `topic`; the rest is shared.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// MQTT: a topic filter whose `{name}` levels capture tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Kafka: the topic to consume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// A database name, or `{name}` for the value a topic level captured.
    pub database: String,
    #[serde(default)]
    pub format: Format,
    /// The table JSON rows go to; line protocol names its own measurement.
    #[serde(default)]
    pub table: Option<String>,
    /// The JSON key holding the row time; absent: arrival time.
    #[serde(default)]
    pub time: Option<TimeField>,
    /// JSON keys stored as tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Timestamp precision of line protocol.
    #[serde(default)]
    pub precision: Option<String>,
}

impl Route {
    /// Checks what can be checked before the first message arrives.
    pub fn validate(&self) -> Result<(), String> {
        if self.format == Format::Json && self.table.as_deref().unwrap_or("").is_empty() {
            return Err("a JSON route needs `table`".into());
        }
        if let Some(p) = &self.precision {
            Precision::parse(p).map_err(|e| e.to_string())?;
        }
        if self.database.is_empty() {
            return Err("`database` is empty".into());
        }
        Ok(())
    }

    /// The `{name}` the database refers to, if it is a capture.
    fn database_capture(&self) -> Option<&str> {
        self.database
            .strip_prefix('{')
            .and_then(|s| s.strip_suffix('}'))
    }

    /// The database a message goes to and the tags its captures add: a
    /// capture the database names is not also a tag.
    pub fn resolve<'s>(
        &'s self,
        captures: &'s [(String, String)],
    ) -> Result<(&'s str, Captures), String> {
        match self.database_capture() {
            Some(name) => {
                let db = captures
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.as_str())
                    .ok_or_else(|| format!("nothing captured as {{{name}}}"))?;
                let tags = captures
                    .iter()
                    .filter(|(k, _)| k != name)
                    .cloned()
                    .collect();
                Ok((db, tags))
            }
            None => Ok((self.database.as_str(), captures.to_vec())),
        }
    }

    /// Maps one payload into `sink`, which must be for the database
    /// [`Route::resolve`] named; `tags` are added to every row and
    /// `arrival` (ns) is the time of rows that carry none.
    pub fn prepare_into(
        &self,
        sink: &mut RowSink<'_>,
        payload: &[u8],
        tags: &[(String, String)],
        arrival: i64,
    ) -> Result<(), IngestError> {
        match self.format {
            Format::LineProtocol => {
                let precision = match &self.precision {
                    Some(p) => Precision::parse(p)?,
                    None => Precision::Nanoseconds,
                };
                let opts = WriteOptions {
                    database: String::new(),
                    precision,
                    default_time: arrival,
                    extra_tags: tags.to_vec(),
                };
                crate::lp::prepare_into(sink, payload, &opts)
            }
            Format::Json => {
                let mapping = JsonMapping {
                    table: self.table.clone().unwrap_or_default(),
                    tags: self.tags.clone(),
                    time: self.time.clone(),
                };
                crate::json::prepare_into(sink, payload, &mapping, tags, arrival)
            }
        }
    }

    /// Turns one payload into shard writes (see [`Route::prepare_into`]).
    pub fn prepare(
        &self,
        catalog: &Catalog,
        shards: usize,
        payload: &[u8],
        captures: &[(String, String)],
        arrival: i64,
    ) -> Result<Prepared, IngestError> {
        let (database, tags) = self.resolve(captures).map_err(IngestError::Database)?;
        let mut sink = RowSink::new(catalog, database, shards)?;
        self.prepare_into(&mut sink, payload, &tags, arrival)?;
        sink.finish()
    }
}

/// `(name, value)` of the topic levels a pattern captured.
pub type Captures = Vec<(String, String)>;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Exact(String),
    /// `+`, or `{name}` when it captures.
    One(Option<String>),
    /// `#`: this level and everything below.
    Rest,
}

/// An MQTT topic filter whose single-level wildcards may be named:
/// `factory/{site}/{device}/telemetry` matches like `factory/+/+/telemetry`
/// and captures the two levels as tags `site` and `device`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPattern {
    levels: Vec<Level>,
}

impl TopicPattern {
    pub fn parse(pattern: &str) -> Result<Self, String> {
        if pattern.is_empty() {
            return Err("empty topic filter".into());
        }
        let parts: Vec<&str> = pattern.split('/').collect();
        let mut levels = Vec::with_capacity(parts.len());
        for (i, p) in parts.iter().enumerate() {
            let level = match *p {
                "+" => Level::One(None),
                "#" if i + 1 == parts.len() => Level::Rest,
                "#" => return Err(format!("{pattern:?}: `#` must be the last level")),
                p if p.starts_with('{') && p.ends_with('}') && p.len() > 2 => {
                    let name = &p[1..p.len() - 1];
                    if name.contains(['{', '}', '+', '#']) {
                        return Err(format!("{pattern:?}: bad capture {p:?}"));
                    }
                    Level::One(Some(name.to_string()))
                }
                p if p.contains(['+', '#', '{', '}']) => {
                    return Err(format!(
                        "{pattern:?}: level {p:?} mixes a wildcard or brace with text"
                    ))
                }
                p => Level::Exact(p.to_string()),
            };
            levels.push(level);
        }
        let mut names: Vec<&str> = levels
            .iter()
            .filter_map(|l| match l {
                Level::One(Some(n)) => Some(n.as_str()),
                _ => None,
            })
            .collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return Err(format!("{pattern:?} captures the same name twice"));
        }
        Ok(TopicPattern { levels })
    }

    /// The plain MQTT filter to subscribe with.
    pub fn filter(&self) -> String {
        self.levels
            .iter()
            .map(|l| match l {
                Level::Exact(s) => s.as_str(),
                Level::One(_) => "+",
                Level::Rest => "#",
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// The captures of `topic`, or `None` when it does not match.
    pub fn matches(&self, topic: &str) -> Option<Captures> {
        let mut captures = Vec::new();
        self.walk(topic, |name, value| {
            captures.push((name.to_string(), value.to_string()))
        })
        .then_some(captures)
    }

    /// Whether `topic` matches, without taking its captures.
    pub fn is_match(&self, topic: &str) -> bool {
        self.walk(topic, |_, _| {})
    }

    /// Matches `topic` level by level, handing each named level's value to
    /// `capture`. Topics beginning with `$` never match a leading wildcard
    /// (MQTT 4.7.2).
    fn walk<'t>(&self, topic: &'t str, mut capture: impl FnMut(&str, &'t str)) -> bool {
        if topic.starts_with('$') && !matches!(self.levels.first(), Some(Level::Exact(_))) {
            return false;
        }
        let mut parts = topic.split('/');
        for level in &self.levels {
            match (level, parts.next()) {
                (Level::Rest, _) => return true,
                (Level::Exact(s), Some(part)) if part == s.as_str() => {}
                (Level::One(name), Some(part)) => {
                    if let Some(n) = name {
                        capture(n, part);
                    }
                }
                _ => return false,
            }
        }
        parts.next().is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_and_wildcards() {
        let p = TopicPattern::parse("factory/{site}/{device}/telemetry").unwrap();
        assert_eq!(p.filter(), "factory/+/+/telemetry");
        assert_eq!(
            p.matches("factory/north/press-7/telemetry").unwrap(),
            vec![
                ("site".to_string(), "north".to_string()),
                ("device".to_string(), "press-7".to_string())
            ]
        );
        assert!(p.matches("factory/north/telemetry").is_none());
        assert!(p.matches("factory/north/press-7/telemetry/x").is_none());
        let rest = TopicPattern::parse("a/#").unwrap();
        assert!(rest.matches("a/b/c").is_some());
        assert!(rest.matches("a").is_some());
        assert!(TopicPattern::parse("+/x")
            .unwrap()
            .matches("$SYS/x")
            .is_none());
        assert!(TopicPattern::parse("a/#/b").is_err());
        assert!(TopicPattern::parse("a/x+").is_err());
        assert!(TopicPattern::parse("{a}/{a}").is_err());
        assert!(TopicPattern::parse("a//b")
            .unwrap()
            .matches("a//b")
            .is_some());
    }

    #[test]
    fn database_from_a_capture_and_captures_as_tags() {
        let dir = tempfile::tempdir().unwrap();
        let cat = Catalog::open_dir(dir.path()).unwrap();
        let m = Route {
            filter: None,
            topic: None,
            database: "{db}".into(),
            format: Format::LineProtocol,
            table: None,
            time: None,
            tags: vec![],
            precision: None,
        };
        let caps = vec![
            ("db".to_string(), "plant".to_string()),
            ("site".to_string(), "north".to_string()),
        ];
        let p = m
            .prepare(&cat, 1, b"m,site=own v=1 5\nm v=2 6", &caps, 0)
            .unwrap();
        assert_eq!(p.accepted, 2);
        let batch = &p.writes[0].1.tables[0];
        assert_eq!(batch.database, "plant");
        let site = batch.batch.column_by_name("site").unwrap();
        let site = arrow::compute::cast(site, &arrow::datatypes::DataType::Utf8).unwrap();
        let site = site
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .unwrap();
        // A tag the line carries itself wins over the capture.
        assert_eq!(site.value(0), "own");
        assert_eq!(site.value(1), "north");
        assert!(m.prepare(&cat, 1, b"m v=1", &[], 0).is_err());
    }
}
