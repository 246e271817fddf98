use std::{os::unix::net::UnixDatagram, path::PathBuf};

use super::*;

/// A datagram socket bound where systemd's would be, removed when dropped.
struct FakeSystemd {
    socket: UnixDatagram,
    path: Option<PathBuf>,
}

impl FakeSystemd {
    fn at_path(test: &str) -> FakeSystemd {
        let path =
            std::env::temp_dir().join(format!("selfheal-notify-{test}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).expect("bind the fake notify socket");
        FakeSystemd {
            socket,
            path: Some(path),
        }
    }

    fn abstract_named(name: &str) -> FakeSystemd {
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract name");
        let socket = UnixDatagram::bind_addr(&addr).expect("bind the abstract socket");
        FakeSystemd { socket, path: None }
    }

    fn notify_socket(&self) -> String {
        self.path
            .as_ref()
            .expect("a path socket")
            .display()
            .to_string()
    }

    /// The next datagram, or `None` if none comes within a short while.
    fn next(&self) -> Option<String> {
        self.socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        let mut buf = [0u8; 256];
        let len = self.socket.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..len]).into_owned())
    }
}

impl Drop for FakeSystemd {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[test]
fn each_notification_is_one_datagram_in_sd_notify_format() {
    let systemd = FakeSystemd::at_path("format");
    let notifier = Notifier::to_socket(&systemd.notify_socket()).expect("notifier");
    assert!(notifier.is_enabled());
    notifier.ready().expect("ready");
    notifier
        .status("watching 2 units\nall healthy")
        .expect("status");
    notifier.watchdog().expect("watchdog");
    notifier.stopping().expect("stopping");
    assert_eq!(systemd.next().as_deref(), Some("READY=1"));
    assert_eq!(
        systemd.next().as_deref(),
        Some("STATUS=watching 2 units all healthy")
    );
    assert_eq!(systemd.next().as_deref(), Some("WATCHDOG=1"));
    assert_eq!(systemd.next().as_deref(), Some("STOPPING=1"));
}

#[test]
fn an_at_sign_names_an_abstract_socket() {
    let name = format!("selfheal-notify-abstract-{}", std::process::id());
    let systemd = FakeSystemd::abstract_named(&name);
    let notifier = Notifier::to_socket(&format!("@{name}")).expect("notifier");
    notifier.ready().expect("ready");
    assert_eq!(systemd.next().as_deref(), Some("READY=1"));
}

#[test]
fn a_disabled_notifier_sends_nothing_and_does_not_fail() {
    let notifier = Notifier::disabled();
    assert!(!notifier.is_enabled());
    notifier.ready().expect("a no-op");
    notifier.watchdog().expect("a no-op");
}

#[test]
fn a_relative_notify_socket_is_refused() {
    let error = Notifier::to_socket("run/notify").expect_err("not a path");
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    assert!(error.to_string().contains("run/notify"), "{error}");
}

#[test]
fn the_ping_interval_is_half_the_watchdog_timeout() {
    assert_eq!(
        ping_interval(Some("30000000"), None, 42),
        Some(Duration::from_secs(15))
    );
    assert_eq!(
        ping_interval(Some("30000000"), Some("42"), 42),
        Some(Duration::from_secs(15))
    );
}

#[test]
fn no_watchdog_means_no_pings() {
    assert_eq!(ping_interval(None, None, 42), None);
    assert_eq!(ping_interval(Some("0"), None, 42), None);
    assert_eq!(ping_interval(Some("soon"), None, 42), None);
}

#[test]
fn a_watchdog_meant_for_another_process_is_ignored() {
    assert_eq!(ping_interval(Some("30000000"), Some("41"), 42), None);
    assert_eq!(ping_interval(Some("30000000"), Some("x"), 42), None);
}

#[tokio::test]
async fn keep_alive_pings_while_alive_and_stops_on_shutdown() {
    let systemd = FakeSystemd::at_path("keepalive");
    let notifier = Notifier::to_socket(&systemd.notify_socket()).expect("notifier");
    let (stop, shutdown) = watch::channel(false);
    let pinger = keep_alive(&notifier, Duration::from_millis(20), || true, shutdown);
    let stopper = async {
        tokio::time::sleep(Duration::from_millis(70)).await;
        stop.send(true).expect("pinger listening");
    };
    tokio::join!(pinger, stopper);
    assert_eq!(systemd.next().as_deref(), Some("WATCHDOG=1"));
    assert_eq!(systemd.next().as_deref(), Some("WATCHDOG=1"));
}

#[tokio::test]
async fn keep_alive_stays_silent_while_the_loop_is_stuck() {
    let systemd = FakeSystemd::at_path("stuck");
    let notifier = Notifier::to_socket(&systemd.notify_socket()).expect("notifier");
    let (stop, shutdown) = watch::channel(false);
    let pinger = keep_alive(&notifier, Duration::from_millis(10), || false, shutdown);
    let stopper = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        stop.send(true).expect("pinger listening");
    };
    tokio::join!(pinger, stopper);
    assert_eq!(systemd.next(), None);
}
