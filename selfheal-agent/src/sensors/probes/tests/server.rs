//! A local HTTP server for probe tests whose answer can be changed while it runs.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub body: &'static str,
    pub delay: Duration,
    pub chunked: bool,
    /// Ignore `Connection: close` and leave the connection open after answering.
    pub keep_open: bool,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self::body(status, "")
    }

    pub fn body(status: u16, body: &'static str) -> Self {
        Self {
            status,
            body,
            delay: Duration::ZERO,
            chunked: false,
            keep_open: false,
        }
    }
}

#[derive(Default)]
struct Shared {
    reply: Option<Reply>,
    requests: Vec<String>,
}

pub struct TestServer {
    pub addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    task: JoinHandle<()>,
}

impl TestServer {
    pub async fn start(reply: Reply) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Mutex::new(Shared {
            reply: Some(reply),
            requests: Vec::new(),
        }));
        let state = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(answer(stream, state.clone()));
            }
        });
        Self { addr, shared, task }
    }

    pub fn set(&self, reply: Reply) {
        self.shared.lock().unwrap().reply = Some(reply);
    }

    /// The request heads received so far.
    pub fn requests(&self) -> Vec<String> {
        self.shared.lock().unwrap().requests.clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(mut stream: TcpStream, shared: Arc<Mutex<Shared>>) {
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk).await {
            Ok(n @ 1..) => head.extend_from_slice(&chunk[..n]),
            _ => return,
        }
    }
    let reply = {
        let mut shared = shared.lock().unwrap();
        shared
            .requests
            .push(String::from_utf8_lossy(&head).into_owned());
        shared.reply.clone().unwrap()
    };
    tokio::time::sleep(reply.delay).await;
    let (framing, body) = if reply.chunked {
        let half = reply.body.len() / 2;
        let (a, b) = reply.body.split_at(half);
        let body = format!("{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n", a.len(), b.len());
        ("Transfer-Encoding: chunked".to_owned(), body)
    } else {
        (
            format!("Content-Length: {}", reply.body.len()),
            reply.body.to_owned(),
        )
    };
    let response = format!("HTTP/1.1 {} Test\r\n{framing}\r\n\r\n{body}", reply.status);
    let _ = stream.write_all(response.as_bytes()).await;
    if reply.keep_open {
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
}

/// A port on 127.0.0.1 with nothing listening (bound, then released).
pub async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}
