//! Which Debian mirror debootstrap uses: the one this host's apt already uses for the suite, so
//! that a machine behind a local mirror (or allowed only to reach one) builds the image too.

/// Used when the host's apt sources name no mirror for the suite.
pub const FALLBACK: &str = "http://deb.debian.org/debian";

/// The first `deb` source in the host's apt configuration that serves `suite` with the `main`
/// component, or [`FALLBACK`].
pub fn host_mirror(suite: &str) -> String {
    let mut texts = Vec::new();
    if let Ok(text) = std::fs::read_to_string("/etc/apt/sources.list") {
        texts.push((false, text));
    }
    let mut entries: Vec<_> = std::fs::read_dir("/etc/apt/sources.list.d")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        let deb822 = path.extension().is_some_and(|e| e == "sources");
        let one_line = path.extension().is_some_and(|e| e == "list");
        if let (true, Ok(text)) = (deb822 || one_line, std::fs::read_to_string(&path)) {
            texts.push((deb822, text));
        }
    }
    texts
        .iter()
        .find_map(|(deb822, text)| {
            if *deb822 {
                from_deb822(text, suite)
            } else {
                from_one_line(text, suite)
            }
        })
        .unwrap_or_else(|| FALLBACK.to_owned())
}

/// `deb [options] URI SUITE COMPONENT...` lines.
fn from_one_line(text: &str, suite: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let line = line.split('#').next().unwrap_or_default();
        let rest = line.trim_start().strip_prefix("deb")?;
        if !rest.starts_with(char::is_whitespace) {
            return None; // deb-src
        }
        let rest = rest.trim_start();
        // Options: `[arch=amd64 signed-by=...]`, possibly several words.
        let rest = match rest.strip_prefix('[') {
            Some(options) => options.split_once(']')?.1,
            None => rest,
        };
        let mut words = rest.split_whitespace();
        let uri = words.next()?;
        let rest: Vec<&str> = words.collect();
        (rest.first() == Some(&suite) && rest.contains(&"main")).then(|| uri.to_owned())
    })
}

/// deb822 stanzas (`Types:`, `URIs:`, `Suites:`, `Components:`), separated by blank lines.
fn from_deb822(text: &str, suite: &str) -> Option<String> {
    text.split("\n\n").find_map(|stanza| {
        let field = |name: &str| -> Vec<&str> {
            stanza
                .lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.split_once(':'))
                .find(|(key, _)| key.trim().eq_ignore_ascii_case(name))
                .map(|(_, value)| value.split_whitespace().collect())
                .unwrap_or_default()
        };
        let serves = field("Types").contains(&"deb")
            && field("Suites").contains(&suite)
            && field("Components").contains(&"main")
            && field("Enabled") != ["no"];
        serves.then(|| field("URIs").first().map(|u| (*u).to_owned()))?
    })
}

#[cfg(test)]
mod tests {
    use super::{from_deb822, from_one_line};

    #[test]
    fn deb822_stanza_for_the_suite_gives_its_uri_and_security_is_skipped() {
        let text = "Types: deb\n# a comment: with a colon\nURIs: http://mirror.example/debian\n\
                    Suites: bookworm bookworm-updates\nComponents: main\n\n\
                    Types: deb\nURIs: http://mirror.example/debian-security\n\
                    Suites: bookworm-security\nComponents: main\n";
        assert_eq!(
            from_deb822(text, "bookworm").as_deref(),
            Some("http://mirror.example/debian")
        );
        assert_eq!(from_deb822(text, "trixie"), None);
    }

    #[test]
    fn deb822_stanza_without_main_or_disabled_is_not_a_mirror() {
        let contrib = "Types: deb\nURIs: http://a/debian\nSuites: bookworm\nComponents: contrib\n";
        let disabled =
            "Types: deb\nURIs: http://a/debian\nSuites: bookworm\nComponents: main\nEnabled: no\n";
        assert_eq!(from_deb822(contrib, "bookworm"), None);
        assert_eq!(from_deb822(disabled, "bookworm"), None);
    }

    #[test]
    fn one_line_source_with_options_gives_its_uri() {
        let text = "# deb http://old/debian bookworm main\n\
                    deb-src http://src/debian bookworm main\n\
                    deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main contrib\n";
        assert_eq!(
            from_one_line(text, "bookworm").as_deref(),
            Some("http://mirror.example/debian")
        );
        assert_eq!(from_one_line(text, "bookworm-security"), None);
    }
}
