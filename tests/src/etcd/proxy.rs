//! A TCP proxy in front of the etcd members, owned by a test, that can cut one agent off from
//! etcd (loopback only) without touching the cluster or the other agents.

use std::{
    io::copy,
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
};

pub struct Proxy {
    listeners: Vec<SocketAddr>,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    /// One listening port per member, each forwarding to that member.
    pub fn start(targets: &[SocketAddr]) -> anyhow::Result<Proxy> {
        let cut = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(Vec::new()));
        let mut listeners = Vec::new();
        for target in targets {
            let listener = TcpListener::bind("127.0.0.1:0")?;
            listeners.push(listener.local_addr()?);
            let (cut, open, target) = (cut.clone(), open.clone(), *target);
            thread::spawn(move || {
                for client in listener.incoming().flatten() {
                    if cut.load(Ordering::SeqCst) {
                        let _ = client.shutdown(Shutdown::Both);
                        continue;
                    }
                    let Ok(server) = TcpStream::connect(target) else {
                        continue;
                    };
                    pipe(&client, &server, &open);
                }
            });
        }
        Ok(Proxy {
            listeners,
            cut,
            open,
        })
    }

    /// The endpoints to give the agent instead of the members'.
    pub fn endpoints(&self) -> Vec<String> {
        self.listeners
            .iter()
            .map(|a| format!("http://{a}"))
            .collect()
    }

    /// Cuts every connection and refuses new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        if let Ok(mut open) = self.open.lock() {
            for stream in open.drain(..) {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

fn pipe(client: &TcpStream, server: &TcpStream, open: &Mutex<Vec<TcpStream>>) {
    let streams = [
        client.try_clone(),
        server.try_clone(),
        client.try_clone(),
        server.try_clone(),
    ];
    let [Ok(c1), Ok(s1), Ok(c2), Ok(s2)] = streams else {
        return;
    };
    if let (Ok(mut list), Ok(c), Ok(s)) = (open.lock(), client.try_clone(), server.try_clone()) {
        list.push(c);
        list.push(s);
    }
    for (mut from, mut to) in [(c1, s1), (s2, c2)] {
        thread::spawn(move || {
            let _ = copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Both);
            let _ = from.shutdown(Shutdown::Both);
        });
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
    }
}
