//! Result encodings. Each encoder turns a stream of record batches into
//! chunks of bytes as they come, so large results are never held whole.

use std::io::Write;

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::ipc::writer::StreamWriter;
use arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::error::QueryError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    JsonLines,
    Csv,
    Arrow,
}

impl Format {
    pub fn parse(s: &str) -> Result<Self, QueryError> {
        match s.to_ascii_lowercase().as_str() {
            "json" => Ok(Format::Json),
            "jsonl" | "ndjson" => Ok(Format::JsonLines),
            "csv" => Ok(Format::Csv),
            "arrow" => Ok(Format::Arrow),
            other => Err(QueryError::Format(other.to_string())),
        }
    }

    /// Picks a format from an `Accept` header; `None` when it names none we serve.
    pub fn from_accept(accept: &str) -> Option<Self> {
        accept
            .split(',')
            .find_map(|part| match part.split(';').next().unwrap_or("").trim() {
                "application/json" => Some(Format::Json),
                "application/x-ndjson" | "application/jsonl" => Some(Format::JsonLines),
                "text/csv" => Some(Format::Csv),
                "application/vnd.apache.arrow.stream" => Some(Format::Arrow),
                _ => None,
            })
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::JsonLines => "application/x-ndjson",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Arrow => "application/vnd.apache.arrow.stream",
        }
    }
}

fn format_options() -> FormatOptions<'static> {
    FormatOptions::default().with_display_error(true)
}

pub fn type_name(dt: &DataType) -> String {
    match dt {
        DataType::Dictionary(_, v) => type_name(v),
        other => other.to_string(),
    }
}

/// Writes one cell as a JSON value.
fn json_cell(out: &mut Vec<u8>, col: &dyn Array, fmt: &ArrayFormatter<'_>, row: usize) {
    // A NullArray has no validity buffer: `is_null` says false for it.
    if col.is_null(row) || col.data_type() == &DataType::Null {
        out.extend_from_slice(b"null");
        return;
    }
    let text = fmt.value(row).to_string();
    let dt = match col.data_type() {
        DataType::Dictionary(_, v) => v.as_ref(),
        d => d,
    };
    match dt {
        DataType::Boolean
        | DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => out.extend_from_slice(text.as_bytes()),
        DataType::Float16 | DataType::Float32 | DataType::Float64 => {
            // JSON has no NaN or infinity.
            match text.parse::<f64>() {
                Ok(f) if f.is_finite() => out.extend_from_slice(text.as_bytes()),
                _ => out.extend_from_slice(b"null"),
            }
        }
        _ => {
            let _ = serde_json::to_writer(&mut *out, &text);
        }
    }
}

pub struct Encoder {
    format: Format,
    schema: SchemaRef,
    rows_written: usize,
    csv_header_done: bool,
    arrow: Option<StreamWriter<Vec<u8>>>,
}

impl Encoder {
    pub fn new(format: Format, schema: SchemaRef) -> Self {
        Encoder {
            format,
            schema,
            rows_written: 0,
            csv_header_done: false,
            arrow: None,
        }
    }

    pub fn begin(&mut self) -> Result<Vec<u8>, QueryError> {
        let mut out = Vec::new();
        match self.format {
            Format::Json => {
                out.extend_from_slice(b"{\"columns\":[");
                for (i, f) in self.schema.fields().iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    let col =
                        serde_json::json!({"name": f.name(), "type": type_name(f.data_type())});
                    let _ = serde_json::to_writer(&mut out, &col);
                }
                out.extend_from_slice(b"],\"rows\":[");
            }
            Format::Arrow => {
                let w = StreamWriter::try_new(Vec::new(), &self.schema)
                    .map_err(|e| QueryError::Execution(e.into()))?;
                self.arrow = Some(w);
                out = self.drain_arrow();
            }
            Format::Csv | Format::JsonLines => {}
        }
        Ok(out)
    }

    fn drain_arrow(&mut self) -> Vec<u8> {
        self.arrow
            .as_mut()
            .map(|w| std::mem::take(w.get_mut()))
            .unwrap_or_default()
    }

    pub fn batch(&mut self, batch: &RecordBatch) -> Result<Vec<u8>, QueryError> {
        let mut out = Vec::new();
        match self.format {
            Format::Json | Format::JsonLines => {
                let opts = format_options();
                let fmts = batch
                    .columns()
                    .iter()
                    .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| QueryError::Execution(e.into()))?;
                let names: Vec<Vec<u8>> = self
                    .schema
                    .fields()
                    .iter()
                    .map(|f| serde_json::to_vec(f.name()).unwrap_or_default())
                    .collect();
                for row in 0..batch.num_rows() {
                    if self.format == Format::Json {
                        if self.rows_written > 0 {
                            out.push(b',');
                        }
                        out.push(b'[');
                    } else {
                        out.push(b'{');
                    }
                    for (i, col) in batch.columns().iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        if self.format == Format::JsonLines {
                            out.extend_from_slice(&names[i]);
                            out.push(b':');
                        }
                        json_cell(&mut out, col.as_ref(), &fmts[i], row);
                    }
                    out.extend_from_slice(if self.format == Format::Json {
                        b"]"
                    } else {
                        b"}\n"
                    });
                    self.rows_written += 1;
                }
            }
            Format::Csv => {
                let mut w = arrow::csv::WriterBuilder::new()
                    .with_header(!self.csv_header_done)
                    .build(&mut out);
                w.write(batch)
                    .map_err(|e| QueryError::Execution(e.into()))?;
                drop(w);
                self.csv_header_done = true;
            }
            Format::Arrow => {
                if let Some(w) = self.arrow.as_mut() {
                    w.write(batch)
                        .map_err(|e| QueryError::Execution(e.into()))?;
                }
                out = self.drain_arrow();
            }
        }
        Ok(out)
    }

    /// Closes the document; `error` is a failure that happened mid-stream.
    pub fn end(&mut self, error: Option<&str>) -> Vec<u8> {
        let mut out = Vec::new();
        match self.format {
            Format::Json => {
                out.push(b']');
                if let Some(e) = error {
                    out.extend_from_slice(b",\"error\":");
                    let _ = serde_json::to_writer(&mut out, e);
                }
                out.push(b'}');
            }
            Format::JsonLines => {
                if let Some(e) = error {
                    let _ = writeln!(out, "{}", serde_json::json!({ "error": e }));
                }
            }
            Format::Csv => {
                if !self.csv_header_done && error.is_none() {
                    let names: Vec<&str> = self
                        .schema
                        .fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect();
                    let _ = writeln!(out, "{}", names.join(","));
                }
            }
            Format::Arrow => {
                if let Some(w) = self.arrow.as_mut() {
                    let _ = w.finish();
                }
                out = self.drain_arrow();
            }
        }
        out
    }
}
