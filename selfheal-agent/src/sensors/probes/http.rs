//! A minimal HTTP/1.1 GET over a tokio `TcpStream`: enough to read a status and search a body
//! without an HTTP stack in the agent. No TLS, no redirects (a 3xx is a failure unless
//! expected), one request per connection.

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use super::{HttpUrl, exec::io_text};

/// Longest status line plus headers read; health endpoints send far less.
const MAX_HEAD: usize = 16 * 1024;
/// Longest body searched for `body_contains`.
pub(super) const MAX_BODY: usize = 64 * 1024;

/// The probe's verdict: `Ok(detail)` when healthy, `Err(detail)` when not.
pub(super) async fn check(
    url: &HttpUrl,
    expect_status: Option<u16>,
    body_contains: Option<&str>,
) -> Result<String, String> {
    let (status, body) = get(url, body_contains.is_some()).await?;
    let healthy = match expect_status {
        Some(expected) => status == expected,
        None => (200..300).contains(&status),
    };
    if !healthy {
        let expected = expect_status.map_or("2xx".to_owned(), |s| s.to_string());
        return Err(format!("HTTP {status}, expected {expected}"));
    }
    match body_contains {
        Some(needle) if !contains(&body, needle.as_bytes()) => Err(format!(
            "HTTP {status}, but the body does not contain {needle:?}"
        )),
        _ => Ok(format!("HTTP {status}")),
    }
}

/// Sends the GET and returns the status and, when `want_body`, up to [`MAX_BODY`] of the body.
async fn get(url: &HttpUrl, want_body: bool) -> Result<(u16, Vec<u8>), String> {
    let address = &url.authority;
    let mut stream = TcpStream::connect((address.host.as_str(), address.port))
        .await
        .map_err(|e| format!("cannot connect to {address}: {}", io_text(&e)))?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {address}\r\nUser-Agent: selfheal-agent/{}\r\n\
         Accept: */*\r\nConnection: close\r\n\r\n",
        url.path,
        env!("CARGO_PKG_VERSION"),
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("sending the request to {address}: {}", io_text(&e)))?;

    let mut buf = Vec::with_capacity(4096);
    let head_end = loop {
        if let Some(at) = find(&buf, b"\r\n\r\n") {
            break at;
        }
        if buf.len() > MAX_HEAD {
            return Err(format!("response headers longer than {MAX_HEAD} bytes"));
        }
        if read_some(&mut stream, &mut buf).await? == 0 {
            return Err("connection closed before the end of the response headers".into());
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = status_of(&head)?;
    if !want_body {
        return Ok((status, Vec::new()));
    }
    let chunked = header(&head, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    // A chunked body's Content-Length, if any, is to be ignored (RFC 9112, 6.3).
    let length = header(&head, "content-length")
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|_| !chunked);
    let mut body = buf.split_off(head_end + 4);
    // Stop at the announced end even if the server ignores `Connection: close`.
    loop {
        let done = match (length, chunked) {
            (_, true) => dechunk(&body).1,
            (Some(length), false) => body.len() >= length,
            (None, false) => false,
        };
        if done || body.len() >= MAX_BODY || read_some(&mut stream, &mut body).await? == 0 {
            break;
        }
    }
    if chunked {
        body = dechunk(&body).0;
    }
    body.truncate(length.unwrap_or(MAX_BODY).min(MAX_BODY));
    Ok((status, body))
}

async fn read_some(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<usize, String> {
    let mut chunk = [0u8; 4096];
    let n = stream
        .read(&mut chunk)
        .await
        .map_err(|e| format!("reading the response: {}", io_text(&e)))?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

/// The status code of "HTTP/1.1 200 OK".
fn status_of(head: &str) -> Result<u16, String> {
    let line = head.lines().next().unwrap_or_default();
    let mut words = line.split_whitespace();
    match (words.next(), words.next().map(str::parse::<u16>)) {
        (Some(version), Some(Ok(status))) if version.starts_with("HTTP/") => Ok(status),
        _ => Err(format!("not an HTTP response: {:?}", truncate(line, 80))),
    }
}

/// The value of the first header called `name` (lowercase), trimmed.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then_some(value.trim())
    })
}

/// Decodes a chunked body as far as it goes; `true` once the last (empty) chunk was seen.
fn dechunk(mut raw: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    while let Some(line_end) = find(raw, b"\r\n") {
        let size_text = String::from_utf8_lossy(&raw[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            break;
        };
        if size == 0 {
            return (out, true);
        }
        let data = &raw[line_end + 2..];
        let take = size.min(data.len());
        out.extend_from_slice(&data[..take]);
        if take < size || data.len() < size + 2 {
            break;
        }
        raw = &data[size + 2..];
    }
    (out, false)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || find(haystack, needle).is_some()
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_line_gives_its_code() {
        assert_eq!(
            status_of("HTTP/1.1 503 Service Unavailable\r\nX: y"),
            Ok(503)
        );
        assert_eq!(status_of("HTTP/1.0 200"), Ok(200));
        assert!(status_of("SSH-2.0-OpenSSH_9.6").is_err());
        assert!(status_of("HTTP/1.1 abc").is_err());
    }

    #[test]
    fn headers_are_found_whatever_their_case() {
        let head = "HTTP/1.1 200 OK\r\nContent-Length: 12\r\nTRANSFER-ENCODING: chunked";
        assert_eq!(header(head, "content-length"), Some("12"));
        assert_eq!(header(head, "transfer-encoding"), Some("chunked"));
        assert_eq!(header(head, "host"), None);
    }

    #[test]
    fn a_chunked_body_is_decoded_and_its_end_recognised() {
        let raw = b"4\r\nWiki\r\n6;ext=1\r\npedia \r\n0\r\n\r\n";
        assert_eq!(dechunk(raw), (b"Wikipedia ".to_vec(), true));
        assert_eq!(dechunk(b"4\r\nWi"), (b"Wi".to_vec(), false));
    }
}
