//! Servers for the healing tests: one whose workers deadlock while its acceptor and a timer
//! thread go on running (requests pile up unread in accepted sockets), and a healthy line echo
//! server for the false-positive controls (sustained load, idle keep-alive connections), and
//! one that never closes the connections it accepted (a server-side connection leak).

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{TcpListener, TcpStream},
    process::ExitCode,
    sync::{Arc, Barrier, Mutex},
    thread,
    time::Duration,
};

pub fn run(mode: &str, args: &[String]) -> Option<Result<ExitCode, String>> {
    Some(match (mode, args) {
        ("deadlocked-server", [port]) => listen(port).and_then(deadlocked),
        ("echo-server", [port]) => listen(port).and_then(echo),
        ("hold-accepted", [port]) => listen(port).and_then(hold),
        _ => return None,
    })
}

fn listen(port: &str) -> Result<TcpListener, String> {
    let port: u16 = port
        .parse()
        .map_err(|_| format!("PORT {port:?} is not a valid port"))?;
    TcpListener::bind(("127.0.0.1", port)).map_err(|err| format!("binding 127.0.0.1:{port}: {err}"))
}

/// Two workers take two locks in opposite orders (a barrier makes sure both hold their first),
/// so they block forever; the acceptor keeps accepting and parks every connection, unread, for
/// the workers that never come; a timer thread wakes every 50 ms, so the unit always runs.
fn deadlocked(listener: TcpListener) -> Result<ExitCode, String> {
    let locks = Arc::new((Mutex::new(()), Mutex::new(())));
    let barrier = Arc::new(Barrier::new(2));
    for first_a in [true, false] {
        let (locks, barrier) = (locks.clone(), barrier.clone());
        thread::spawn(move || {
            let (a, b) = (&locks.0, &locks.1);
            let (first, second) = if first_a { (a, b) } else { (b, a) };
            let _held = first.lock();
            barrier.wait();
            let _never = second.lock();
        });
    }
    thread::spawn(|| {
        loop {
            thread::sleep(Duration::from_millis(50));
        }
    });
    println!(
        "deadlocked workers; accepting on {:?}",
        listener.local_addr()
    );
    let _ = std::io::stdout().flush();
    let mut parked: Vec<TcpStream> = Vec::new();
    for stream in listener.incoming() {
        parked.extend(stream.ok());
    }
    Ok(ExitCode::SUCCESS)
}

/// Accepts every connection and never closes one (nor reads it): a server-side connection
/// leak, each closed client leaving a socket in CLOSE_WAIT behind.
fn hold(listener: TcpListener) -> Result<ExitCode, String> {
    println!(
        "holding every connection accepted on {:?}",
        listener.local_addr()
    );
    let _ = std::io::stdout().flush();
    let mut held: Vec<TcpStream> = Vec::new();
    for stream in listener.incoming() {
        held.extend(stream.ok());
    }
    Ok(ExitCode::SUCCESS)
}

/// A thread per connection echoes every line back.
fn echo(listener: TcpListener) -> Result<ExitCode, String> {
    println!("echoing on {:?}", listener.local_addr());
    let _ = std::io::stdout().flush();
    for stream in listener.incoming().flatten() {
        thread::spawn(move || {
            let Ok(mut out) = stream.try_clone() else {
                return;
            };
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { return };
                if writeln!(out, "{line}").is_err() {
                    return;
                }
            }
        });
    }
    Ok(ExitCode::SUCCESS)
}
