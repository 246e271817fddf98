//! Where a unit's cgroup lives, even before systemd has created it.

/// The cgroup path systemd will give `unit` in `slice`, under the manager's root cgroup
/// (`Manager.ControlGroup`: "" for the system manager, the user manager's own cgroup for
/// `--user`). systemd nests slices by their dash-separated prefixes:
/// `a-b.slice` lives at `/a.slice/a-b.slice`.
pub fn predicted(manager_root: &str, slice: &str, unit: &str) -> String {
    let mut path = manager_root.trim_end_matches('/').to_owned();
    if let Some(stem) = slice.strip_suffix(".slice")
        && stem != "-"
    {
        let mut prefix = String::new();
        for part in stem.split('-') {
            if !prefix.is_empty() {
                prefix.push('-');
            }
            prefix.push_str(part);
            path.push('/');
            path.push_str(&prefix);
            path.push_str(".slice");
        }
    }
    path.push('/');
    path.push_str(unit);
    path
}

#[cfg(test)]
mod tests {
    use super::predicted;

    #[test]
    fn system_units_live_under_their_slice() {
        assert_eq!(
            predicted("", "system.slice", "web.service"),
            "/system.slice/web.service"
        );
    }

    #[test]
    fn nested_slices_follow_dash_prefixes() {
        assert_eq!(
            predicted("", "a-b-c.slice", "x.service"),
            "/a.slice/a-b.slice/a-b-c.slice/x.service"
        );
    }

    #[test]
    fn root_slice_adds_nothing() {
        assert_eq!(
            predicted(
                "/user.slice/user-0.slice/user@0.service",
                "-.slice",
                "x.service"
            ),
            "/user.slice/user-0.slice/user@0.service/x.service"
        );
    }

    #[test]
    fn user_manager_root_prefixes_the_path() {
        assert_eq!(
            predicted("/sandbox/", "app.slice", "x.service"),
            "/sandbox/app.slice/x.service"
        );
    }
}
