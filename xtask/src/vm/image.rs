//! The guest's disk image: Debian bookworm from Debian's own packages (debootstrap), with systemd
//! as PID 1, its kernel and initrd beside it. Built once and cached (in /var/cache/selfheal/vm),
//! keyed by a hash of everything that goes into it, so a rerun boots at once and a changed recipe
//! rebuilds.

use std::{
    fs::{self, File},
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, bail};

use super::{mirror, seconds};
use crate::cmd;

pub const SUITE: &str = "bookworm";

/// Installed on top of debootstrap's minbase: systemd as init, the kernel (with BTF and the 9p
/// modules), the services the scenarios misbehave with, and jq to read `status --json`.
const PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "dbus",
    "udev",
    "kmod",
    "linux-image-amd64",
    "nginx",
    "procps",
    "iproute2",
    "jq",
    // `man selfheal-agent`: the package ships man pages; the package scenario reads them.
    "man-db",
];

/// Bump when the build steps below change in a way the hashed inputs do not show.
const RECIPE_VERSION: u32 = 1;

/// What a built image is made of, all in one cache directory.
pub struct Image {
    pub dir: PathBuf,
    pub disk: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

impl Image {
    fn in_dir(dir: PathBuf) -> Self {
        Image {
            disk: dir.join("disk.img"),
            kernel: dir.join("vmlinuz"),
            initrd: dir.join("initrd.img"),
            dir,
        }
    }

    fn is_complete(&self) -> bool {
        [&self.disk, &self.kernel, &self.initrd]
            .iter()
            .all(|p| p.is_file())
    }
}

/// The cached image for the current recipe, built first when there is none. Returns it and how
/// long building took (None when it was cached).
pub fn ensure(cache: &Path) -> anyhow::Result<(Image, Option<f64>)> {
    let recipe = recipe_dir();
    let key = recipe_key(&recipe)?;
    let image = Image::in_dir(cache.join(format!("image-{key:016x}")));
    fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
    // The cache is shared by every clone on the machine (CI's and developers'): one builds, the
    // others wait for it and then find the image.
    let _lock = lock(&cache.join("lock"))?;
    if image.is_complete() {
        println!("vm-test: guest image cached in {}", image.dir.display());
        return Ok((image, None));
    }
    let started = Instant::now();
    build(&recipe, &image)
        .with_context(|| format!("building the guest image in {}", image.dir.display()))?;
    let took = started.elapsed().as_secs_f64();
    remove_stale(cache, &image.dir);
    let size = fs::metadata(&image.disk).map_or(0, |m| m.len());
    println!(
        "vm-test: guest image built in {} ({} MiB disk) in {}",
        seconds(took),
        size >> 20,
        image.dir.display()
    );
    Ok((image, Some(took)))
}

/// An exclusive lock on `path`, held until the file is dropped.
fn lock(path: &Path) -> anyhow::Result<File> {
    use std::os::fd::AsRawFd as _;
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening the lock file {}", path.display()))?;
    // SAFETY: flock on a descriptor we own; the lock goes away when the file is closed.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        println!(
            "vm-test: another run is building the guest image; waiting for it ({})",
            path.display()
        );
        // SAFETY: as above, blocking this time.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            bail!(
                "cannot lock {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(file)
}

/// tests/vm/image: `configure.sh` and the `rootfs/` files copied into the image.
fn recipe_dir() -> PathBuf {
    cmd::workspace_root().join("tests/vm/image")
}

/// FNV-1a over the recipe: the constants above and every file of the recipe directory (path,
/// mode, content). Stable across Rust releases, unlike std's hasher.
fn recipe_key(recipe: &Path) -> anyhow::Result<u64> {
    let mut hash = Fnv::default();
    hash.write(format!("{RECIPE_VERSION}\0{SUITE}\0{}\0", PACKAGES.join(" ")).as_bytes());
    for file in files_under(recipe)? {
        let meta = fs::metadata(&file)?;
        let relative = file.strip_prefix(recipe).unwrap_or(&file);
        hash.write(relative.to_string_lossy().as_bytes());
        hash.write(&std::os::unix::fs::PermissionsExt::mode(&meta.permissions()).to_le_bytes());
        hash.write(&fs::read(&file).with_context(|| format!("reading {}", file.display()))?);
    }
    Ok(hash.0)
}

struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
        // A separator, so that ("ab", "c") and ("a", "bc") differ.
        self.0 = (self.0 ^ 0xff).wrapping_mul(0x0100_0000_01b3);
    }
}

/// Regular files under `dir`, sorted, recursively.
fn files_under(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

fn build(recipe: &Path, image: &Image) -> anyhow::Result<()> {
    // Built aside and renamed at the end: an interrupted build is never mistaken for an image.
    let partial = image.dir.with_extension("partial");
    if partial.exists() {
        fs::remove_dir_all(&partial).with_context(|| format!("removing {}", partial.display()))?;
    }
    fs::create_dir_all(&partial)?;
    build_in(recipe, &Image::in_dir(partial.clone()))?;
    fs::rename(&partial, &image.dir)?;
    Ok(())
}

/// Builds the image's files in `image.dir`, through a root file system tree removed at the end.
fn build_in(recipe: &Path, image: &Image) -> anyhow::Result<()> {
    let rootfs = image.dir.join("rootfs");
    let log = image.dir.join("build.log");
    let mirror = mirror::host_mirror(SUITE);
    println!(
        "vm-test: building the guest image: debootstrap {SUITE} from {mirror} (once; a few \
         minutes; log in {})",
        log.display()
    );
    run_logged(
        Command::new("debootstrap")
            .args(["--variant=minbase", "--include"])
            .arg(PACKAGES.join(","))
            .arg(SUITE)
            .arg(&rootfs)
            .arg(&mirror),
        &log,
    )?;

    println!("vm-test: configuring the guest image");
    for file in files_under(&recipe.join("rootfs"))? {
        let target = rootfs.join(file.strip_prefix(recipe.join("rootfs"))?);
        fs::create_dir_all(target.parent().expect("a file has a parent"))?;
        copy(&file, &target)?;
    }
    copy(
        &recipe.join("configure.sh"),
        &rootfs.join("tmp/configure.sh"),
    )?;
    run_logged(
        Command::new("chroot")
            .arg(&rootfs)
            .args(["/bin/sh", "/tmp/configure.sh"]),
        &log,
    )?;
    copy(&only_file(&rootfs.join("boot"), "vmlinuz-")?, &image.kernel)?;
    copy(
        &only_file(&rootfs.join("boot"), "initrd.img-")?,
        &image.initrd,
    )?;

    // Room for what the scenarios write (the disk is a copy-on-write snapshot at run time, so
    // the image itself never changes).
    let used = disk_usage(&rootfs)?;
    let size = (used + used / 2 + (512 << 20)).next_multiple_of(1 << 20);
    File::create(&image.disk)?.set_len(size)?;
    // mke2fs -d fills the file system from a directory: no loop device, no mount.
    run_logged(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "selfheal-vm", "-d"])
            .arg(&rootfs)
            .arg(&image.disk),
        &log,
    )?;
    fs::remove_dir_all(&rootfs)?;
    Ok(())
}

fn copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}

fn run_logged(command: &mut Command, log: &Path) -> anyhow::Result<()> {
    let file = File::options().create(true).append(true).open(log)?;
    command
        .stdout(Stdio::from(file.try_clone()?))
        .stderr(Stdio::from(file));
    if let Err(e) = cmd::run(command) {
        bail!(
            "{e:#}\n--- last lines of {} ---\n{}",
            log.display(),
            tail(log, 20)
        );
    }
    Ok(())
}

pub fn tail(path: &Path, lines: usize) -> String {
    let Ok(file) = File::open(path) else {
        return format!("({} is missing)", path.display());
    };
    let all: Vec<String> = BufReader::new(file).lines().map_while(Result::ok).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The one file in `dir` whose name starts with `prefix` (the image has one kernel).
fn only_file(dir: &Path, prefix: &str) -> anyhow::Result<PathBuf> {
    let found: Vec<PathBuf> = fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!(
            "expected one {prefix}* in {}, found {found:?}",
            dir.display()
        ),
    }
}

fn disk_usage(dir: &Path) -> anyhow::Result<u64> {
    let out = cmd::output(Command::new("du").args(["-sx", "--block-size=1"]).arg(dir))
        .with_context(|| format!("du {} failed", dir.display()))?;
    out.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("cannot read du's output {out:?}"))
}

/// Images of older recipes (and interrupted builds): a GiB each, never used again.
fn remove_stale(cache: &Path, keep: &Path) {
    for entry in fs::read_dir(cache).into_iter().flatten().flatten() {
        let path = entry.path();
        let is_image = entry.file_name().to_string_lossy().starts_with("image-");
        if is_image && path != keep && fs::remove_dir_all(&path).is_ok() {
            println!("vm-test: removed the stale image {}", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Fnv;

    #[test]
    fn recipe_hash_separates_its_inputs() {
        let hash = |parts: &[&str]| {
            let mut h = Fnv::default();
            parts.iter().for_each(|p| h.write(p.as_bytes()));
            h.0
        };
        assert_eq!(hash(&["ab", "c"]), hash(&["ab", "c"]));
        assert_ne!(hash(&["ab", "c"]), hash(&["a", "bc"]));
        assert_ne!(hash(&["ab"]), hash(&["ab", ""]));
    }
}
