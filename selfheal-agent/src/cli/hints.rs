//! Errors that help: what went wrong between the CLI and the agent, and what to do about it.
//! The agent's own answers stay as they are; these add what only the caller's side knows (who
//! it runs as, who owns the socket, which units the agent watches).

use std::{
    ffi::CString,
    os::unix::{
        ffi::OsStrExt as _,
        fs::{MetadataExt as _, PermissionsExt as _},
    },
    path::{Path, PathBuf},
};

use selfheal_agent::report::status;

/// One request to the agent; a refused socket or an unknown unit explained.
pub async fn request(
    socket: &PathBuf,
    command: &str,
    unit: Option<&str>,
) -> anyhow::Result<serde_json::Value> {
    match status::request(socket, command, unit).await {
        Ok(answer) => Ok(answer),
        Err(_) if denied(socket) => Err(anyhow::anyhow!(permission_denied(socket))),
        Err(e) => match unit {
            Some(unit) => match status::query(socket).await {
                Ok(doc) if !doc.units.iter().any(|u| u.name == unit) => {
                    let watched: Vec<String> = doc.units.into_iter().map(|u| u.name).collect();
                    Err(anyhow::anyhow!(unknown_unit(unit, &watched)))
                }
                _ => Err(e),
            },
            None => Err(e),
        },
    }
}

/// The agent's status document, a refused socket explained.
pub async fn query(socket: &PathBuf) -> anyhow::Result<status::StatusDoc> {
    status::query(socket).await.map_err(|e| {
        if denied(socket) {
            anyhow::anyhow!(permission_denied(socket))
        } else {
            e
        }
    })
}

/// Whether we may not write to (connect to) the socket, asked of the kernel with access(2).
fn denied(socket: &Path) -> bool {
    let Ok(path) = CString::new(socket.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: access(2) reads a NUL-terminated path we own.
    let refused = unsafe { libc::access(path.as_ptr(), libc::W_OK) } != 0;
    refused && std::io::Error::last_os_error().raw_os_error() == Some(libc::EACCES)
}

/// Why the status socket refused us, and what to do: run as root, or join the socket's group
/// when the group may use it.
pub fn permission_denied(socket: &Path) -> String {
    let Ok(meta) = std::fs::metadata(socket) else {
        return format!(
            "permission denied on the agent's status socket {}: run as root (e.g. `sudo selfheal-agent …`)",
            socket.display()
        );
    };
    let mode = meta.permissions().mode() & 0o777;
    let owner = format!("{}:{}", user_name(meta.uid()), group_name(meta.gid()));
    let fix = if mode & 0o060 == 0o060 {
        format!(
            "run as root, or join the group `{}` (`usermod -aG {} $USER`, then log in again)",
            group_name(meta.gid()),
            group_name(meta.gid())
        )
    } else {
        "run as root (e.g. `sudo selfheal-agent …`): only its owner may use it".to_owned()
    };
    format!(
        "permission denied on the agent's status socket {} (owner {owner}, mode {mode:04o}): {fix}",
        socket.display()
    )
}

/// Permission denied on a file the agent writes (the audit log): who may read it.
pub fn unreadable(path: &Path, what: &str) -> String {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let owner = std::fs::metadata(dir)
        .map(|m| {
            format!(
                " ({} is {}:{}, mode {:04o})",
                dir.display(),
                user_name(m.uid()),
                group_name(m.gid()),
                m.permissions().mode() & 0o777
            )
        })
        .unwrap_or_default();
    format!(
        "permission denied reading {what} {}{owner}: run as root (e.g. `sudo selfheal-agent events`)",
        path.display()
    )
}

/// "web.service is not watched by this agent; it watches a.service, b.service" with the fix.
pub fn unknown_unit(unit: &str, watched: &[String]) -> String {
    let listed = if watched.is_empty() {
        "it watches no units yet".to_owned()
    } else {
        format!("it watches {}", watched.join(", "))
    };
    let suggestion = watched
        .iter()
        .find(|w| w.strip_suffix(".service") == Some(unit))
        .map(|w| format!(" (did you mean {w}?)"))
        .unwrap_or_default();
    format!(
        "unknown unit {unit}: {listed}{suggestion}. Add a [[unit]] with name = \"{unit}\" to the \
         agent's config to watch it"
    )
}

fn user_name(uid: u32) -> String {
    name_from("/etc/passwd", uid).unwrap_or_else(|| uid.to_string())
}

fn group_name(gid: u32) -> String {
    name_from("/etc/group", gid).unwrap_or_else(|| gid.to_string())
}

/// The name with this id in a passwd-style file (name:x:id:…); no NSS for one error message.
fn name_from(file: &str, id: u32) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        (fields.nth(1)?.parse::<u32>().ok()? == id).then(|| name.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_unit_lists_the_watched_ones_and_suggests_the_suffix() {
        let watched = ["web.service".to_owned(), "db.service".to_owned()];
        let text = unknown_unit("web", &watched);
        assert!(
            text.contains("it watches web.service, db.service"),
            "{text}"
        );
        assert!(text.contains("did you mean web.service?"), "{text}");
        assert!(unknown_unit("x.service", &[]).contains("watches no units yet"));
    }

    #[test]
    fn a_group_writable_socket_says_which_group_to_join() {
        let dir = std::env::temp_dir().join(format!("selfheal-hints-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let socket = dir.join("agent.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o660)).expect("chmod");
        let text = permission_denied(&socket);
        assert!(text.contains("join the group"), "{text}");
        assert!(text.contains("mode 0660"), "{text}");
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let text = permission_denied(&socket);
        assert!(
            text.contains("run as root") && !text.contains("group `"),
            "{text}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
