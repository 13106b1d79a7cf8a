//! A tiny blocking HTTP/1.1 client on `std::net`, enough for whole-stack tests.
//!
//! It keeps one connection alive across requests, like a browser. Like a browser it retries a
//! GET once when a *reused* connection fails before any byte of the answer: the server may close
//! an idle keep-alive connection just as we write to it, and that race is not a failed request.
//! Every other failure is returned, and counted by the tests.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

/// How long a test waits to connect, and then for each read, before calling it a failure.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// One answer: status, headers (names lower-cased) and the whole body.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header (lower-case name, value) pairs in the order received.
    pub headers: Vec<(String, String)>,
    /// The decoded body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client bound to one address (`127.0.0.1:PORT` for a compose lab), reusing its connection.
#[derive(Debug)]
pub struct Client {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
}

/// Why an attempt failed, and whether any byte of the answer had arrived.
struct Failure {
    error: anyhow::Error,
    answered: bool,
}

impl Client {
    /// A client for `http://127.0.0.1:PORT`.
    pub fn new(port: u16) -> Self {
        Self::to(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
    }

    /// A client for `http://ADDR` (a swarm node's published port, say).
    pub fn to(addr: SocketAddr) -> Self {
        Self { addr, conn: None }
    }

    /// `GET path`.
    pub fn get(&mut self, path: &str) -> Result<Response> {
        self.request("GET", path, None)
    }

    /// `POST path` with a JSON body.
    pub fn post_json(&mut self, path: &str, json: &str) -> Result<Response> {
        self.request("POST", path, Some(json))
    }

    /// Sends one request; see the module doc for the single retry of a GET.
    pub fn request(&mut self, method: &str, path: &str, body: Option<&str>) -> Result<Response> {
        let reused = self.conn.is_some();
        match self.attempt(method, path, body) {
            Ok(r) => Ok(r),
            Err(f) if reused && !f.answered && method == "GET" => {
                self.conn = None;
                self.attempt(method, path, body).map_err(|f| f.error)
            }
            Err(f) => Err(f.error),
        }
    }

    fn attempt(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<Response, Failure> {
        let result = self.exchange(method, path, body);
        if result.as_ref().map_or(true, |(_, keep)| !keep) {
            self.conn = None;
        }
        result.map(|(r, _)| r)
    }

    fn exchange(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(Response, bool), Failure> {
        let unanswered = |error: anyhow::Error| Failure {
            error,
            answered: false,
        };
        let conn = match self.conn.take() {
            Some(c) => c,
            None => BufReader::new(connect(self.addr).map_err(unanswered)?),
        };
        let conn = self.conn.insert(conn);
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
        if let Some(b) = body {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            ));
        }
        head.push_str("\r\n");
        head.push_str(body.unwrap_or(""));
        conn.get_mut()
            .write_all(head.as_bytes())
            .with_context(|| format!("{method} {path}: write"))
            .map_err(unanswered)?;
        let mut status_line = String::new();
        let n = conn
            .read_line(&mut status_line)
            .with_context(|| format!("{method} {path}: read status"))
            .map_err(unanswered)?;
        if n == 0 {
            return Err(unanswered(anyhow!(
                "{method} {path}: connection closed before any answer"
            )));
        }
        read_rest(conn, &status_line, method == "HEAD")
            .with_context(|| format!("{method} {path}"))
            .map_err(|error| Failure {
                error,
                answered: true,
            })
    }
}

/// One request on a fresh client: `GET http://127.0.0.1:PORT/PATH`.
pub fn get(port: u16, path: &str) -> Result<Response> {
    Client::new(port).get(path)
}

fn connect(addr: SocketAddr) -> Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .with_context(|| format!("connect {addr}"))?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Reads headers and body after the status line; returns the response and whether the
/// connection may be reused.
fn read_rest(
    conn: &mut BufReader<TcpStream>,
    status_line: &str,
    head_only: bool,
) -> Result<(Response, bool)> {
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line {status_line:?}"))?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if conn.read_line(&mut line)? == 0 {
            bail!("connection closed inside the headers");
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| anyhow!("bad header line {line:?}"))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let mut response = Response {
        status,
        headers,
        body: Vec::new(),
    };
    let mut keep = !response
        .header("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("close"));
    let no_body = head_only || status == 204 || status == 304 || (100..200).contains(&status);
    if no_body {
    } else if response
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        response.body = read_chunked(conn)?;
    } else if let Some(len) = response.header("content-length") {
        let len: usize = len.parse().context("bad content-length")?;
        response.body = vec![0; len];
        conn.read_exact(&mut response.body)
            .context("body shorter than content-length")?;
    } else {
        conn.read_to_end(&mut response.body)?;
        keep = false;
    }
    Ok((response, keep))
}

fn read_chunked(conn: &mut BufReader<TcpStream>) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size_line = String::new();
        conn.read_line(&mut size_line)?;
        let size = size_line.trim().split(';').next().unwrap_or("");
        let size = usize::from_str_radix(size, 16)
            .with_context(|| format!("bad chunk size {size_line:?}"))?;
        if size == 0 {
            // Trailers, then the empty line.
            loop {
                let mut line = String::new();
                if conn.read_line(&mut line)? == 0 || line.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        conn.read_exact(&mut body[start..])?;
        let mut crlf = [0; 2];
        conn.read_exact(&mut crlf)?;
    }
}
