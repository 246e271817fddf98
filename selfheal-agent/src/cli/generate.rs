//! The man page and shell completions, generated from the clap definitions by the binary
//! itself: `cargo xtask deb` runs `selfheal-agent generate …` on the binary it packages, so
//! the documents describe exactly that binary's CLI. (xtask cannot link the agent crate: it
//! installs the eBPF toolchain the agent's build script needs.)

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::CommandFactory as _;
use clap_complete::Shell;

use super::Cli;

#[derive(Debug, clap::Subcommand)]
pub enum Generated {
    /// selfheal-agent.1 and one page per subcommand (selfheal-agent-status.1, …) into DIR.
    Manpage { dir: PathBuf },
    /// Completions for bash, zsh and fish into DIR (selfheal-agent.bash, _selfheal-agent,
    /// selfheal-agent.fish).
    Completions { dir: PathBuf },
}

pub fn generate(what: &Generated) -> anyhow::Result<()> {
    match what {
        Generated::Manpage { dir } => manpages(dir),
        Generated::Completions { dir } => completions(dir),
    }
}

fn manpages(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("writing the man pages into {}", dir.display()))
}

fn completions(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut Cli::command(), "selfheal-agent", dir)
            .with_context(|| format!("writing {shell} completions into {}", dir.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn man_pages_and_completions_cover_every_visible_subcommand() {
        let dir = std::env::temp_dir().join(format!("selfheal-generate-{}", std::process::id()));
        generate(&Generated::Manpage { dir: dir.clone() }).expect("man pages");
        generate(&Generated::Completions { dir: dir.clone() }).expect("completions");
        let main = std::fs::read_to_string(dir.join("selfheal-agent.1")).expect("main page");
        let bash = std::fs::read_to_string(dir.join("selfheal-agent.bash")).expect("bash");
        for sub in Cli::command()
            .get_subcommands()
            .filter(|s| !s.is_hide_set())
        {
            let name = sub.get_name();
            // roff escapes the hyphens of check-config.
            let roff = name.replace('-', "\\-");
            assert!(main.contains(&roff), "{name} missing from the man page");
            assert!(bash.contains(name), "{name} missing from bash completions");
            assert!(
                dir.join(format!("selfheal-agent-{name}.1")).exists(),
                "no page for {name}"
            );
        }
        assert!(
            bash.contains("--follow") && bash.contains("--watch"),
            "{bash}"
        );
        assert!(
            !dir.join("selfheal-agent-generate.1").exists(),
            "generate is hidden"
        );
        assert!(dir.join("_selfheal-agent").exists());
        assert!(dir.join("selfheal-agent.fish").exists());
        let _ = std::fs::remove_dir_all(dir);
    }
}
