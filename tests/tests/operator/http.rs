//! Just enough HTTP/1.1 over a TCP socket to talk to the agent, Prometheus and Alertmanager
//! the way any client would, and a reader for Prometheus's text format.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    time::Duration,
};

use anyhow::{Context as _, bail};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// Names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_str(&self.body)
            .with_context(|| format!("not JSON ({}): {}", self.status, self.body))
    }

    /// The `error` of the agent's `{"error": reason}` answers.
    pub fn error(&self) -> String {
        self.json()
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

pub fn get(address: &str, path: &str) -> anyhow::Result<Response> {
    request(address, "GET", path, &[], b"")
}

/// One request on a fresh connection (`Connection: close`), with a `Content-Length` unless
/// `headers` set one.
pub fn request(
    address: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> anyhow::Result<Response> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let declares_length = headers.iter().any(|(n, _)| {
        n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("transfer-encoding")
    });
    if !declares_length {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut stream = connect(address)?;
    stream.write_all(head.as_bytes())?;
    // A server may answer (413, 401) and close before reading a body: that is its right.
    let _ = stream.write_all(body);
    read_response(&mut stream)
}

pub fn connect(address: &str) -> anyhow::Result<TcpStream> {
    let stream = TcpStream::connect(address).with_context(|| format!("connecting to {address}"))?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    Ok(stream)
}

/// Reads one response: to its `Content-Length`, through its chunks, or to the end.
pub fn read_response(stream: &mut TcpStream) -> anyhow::Result<Response> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        if let Some(response) = parse(&raw)? {
            return Ok(response);
        }
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            // A reset after a complete answer (the server closed with our body unread).
            Err(e) if !raw.is_empty() && e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => return Err(e).context("reading the response"),
        }
    }
    match parse(&raw)? {
        Some(response) => Ok(response),
        None => {
            let Some(end) = find(&raw, b"\r\n\r\n") else {
                bail!(
                    "the connection closed mid-head: {:?}",
                    String::from_utf8_lossy(&raw)
                );
            };
            let (status, headers) = head(&raw[..end])?;
            let body = String::from_utf8_lossy(&raw[end + 4..]).into_owned();
            Ok(Response {
                status,
                headers,
                body,
            })
        }
    }
}

/// A complete response in `raw`, if it holds one yet.
fn parse(raw: &[u8]) -> anyhow::Result<Option<Response>> {
    let Some(end) = find(raw, b"\r\n\r\n") else {
        return Ok(None);
    };
    let (status, headers) = head(&raw[..end])?;
    let rest = &raw[end + 4..];
    let value = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let body = if let Some(length) = value("content-length") {
        let length: usize = length.parse().context("Content-Length")?;
        if rest.len() < length {
            return Ok(None);
        }
        rest[..length].to_vec()
    } else if value("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        match dechunk(rest)? {
            Some(body) => body,
            None => return Ok(None),
        }
    } else {
        return Ok(None);
    };
    let body = String::from_utf8(body).context("a body that is not UTF-8")?;
    Ok(Some(Response {
        status,
        headers,
        body,
    }))
}

fn head(head: &[u8]) -> anyhow::Result<(u16, Vec<(String, String)>)> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("a malformed status line: {status_line:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok((status, headers))
}

/// The body of a chunked message, once its last chunk arrived.
fn dechunk(mut rest: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = find(rest, b"\r\n") else {
            return Ok(None);
        };
        let size_text = String::from_utf8_lossy(&rest[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .with_context(|| format!("a malformed chunk size {size_text:?}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(Some(body));
        }
        if rest.len() < size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The value of the sample `name` whose labels include `labels`, from a Prometheus text
/// exposition (labels in any order).
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((metric, rest)) => (metric, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            let found = parse_labels(label_text);
            let all = labels
                .iter()
                .all(|(k, v)| found.iter().any(|(fk, fv)| fk == k && fv == v));
            (metric == name && all).then(|| value.parse().ok())?
        })
}

/// `a="x",b="y"` → pairs (values without escapes, as the agent's labels are).
fn parse_labels(text: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let Some((value, tail)) = after.split_once('"') else {
            break;
        };
        pairs.push((
            key.trim_start_matches(',').trim().to_owned(),
            value.to_owned(),
        ));
        rest = tail;
    }
    pairs
}
