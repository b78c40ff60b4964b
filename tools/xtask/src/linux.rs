//! Debian's arm64 kernels and busybox for the Linux test guest, fetched
//! without touching the host's dpkg or APT state (DESIGN.md §6).
//!
//! A private APT setup lives under `target/xtask/apt/`: its own `apt.conf`
//! (passed as `APT_CONFIG`) sets `APT::Architecture "arm64"` and points every
//! state, cache, log, configuration-part, preference and source folder into
//! that folder, and the dpkg status file at an empty file there. Its one
//! source entry takes the URI and `Signed-By` of the host's existing
//! `bookworm` entry (no mirror host is written here) and names the suites
//! `bookworm` and `bookworm-backports`, component `main`, `Architectures:
//! arm64`. From the host it reads only that source entry and the proxy and
//! date-check settings of `apt-config dump`, so downloads go the way the
//! host's own APT goes.
//!
//! Then `apt-get update`, version resolution with `apt-cache show PKG/SUITE`:
//!
//! | role | package |
//! |---|---|
//! | `bookworm` | the dependency of `linux-image-cloud-arm64` in `bookworm` (Linux 6.1) |
//! | `backports` | the dependency of `linux-image-cloud-arm64` in `bookworm-backports` (Linux 6.12) |
//! | `busybox` | `busybox-static` from `bookworm` |
//!
//! `apt-get download` fetches the `.deb`s and `dpkg-deb -x` (which reads
//! and writes no dpkg state) unpacks each into `target/xtask/linux/<package>/`.
//! `target/xtask/linux/packages.stamp` records the resolved versions; while
//! it and the unpacked files are present, [`ensure_kernels`] does no network
//! access at all. [`Fetch::Refresh`] resolves the versions again.
//!
//! Debian's arm64 `boot/vmlinuz-*` is a raw arm64 `Image` (with an EFI stub),
//! not compressed; [`ImageHeader`] (`kernel_image.rs`) checks its header and
//! refuses gzip or EFI zboot images with a clear error.

use crate::apt::{self, Entry};
use crate::kernel_image::ImageHeader;
use crate::paths::Workspace;
use anyhow::{Context, Result, bail};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Debian release whose source entry is reused and whose kernel is 6.1.
pub const BASE_SUITE: &str = "bookworm";
/// The suite the 6.12 kernel comes from.
pub const BACKPORTS_SUITE: &str = apt::BACKPORTS_SUITE;
/// The metapackage whose dependency names the current cloud kernel.
pub const KERNEL_METAPACKAGE: &str = "linux-image-cloud-arm64";
/// The static busybox.
pub const BUSYBOX_PACKAGE: &str = "busybox-static";
/// Debian's name of the architecture.
const DEB_ARCH: &str = "arm64";
/// Where busybox sits inside its package.
const BUSYBOX_PATH: &str = "bin/busybox";
/// The file, in the unpacked package's folder, naming what was unpacked.
const UNPACKED_MARKER: &str = ".xtask-package";
/// The file recording the resolved packages, in `target/xtask/linux/`.
const STAMP: &str = "packages.stamp";
/// Host keyrings, used only when the host entry has no `Signed-By`.
const HOST_TRUSTED: &str = "/etc/apt/trusted.gpg";
const HOST_TRUSTED_DIR: &str = "/etc/apt/trusted.gpg.d";

/// One of the two kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum KernelChoice {
    /// Debian 12's own kernel (Linux 6.1).
    Bookworm,
    /// The kernel from `bookworm-backports` (Linux 6.12).
    Backports,
}

impl KernelChoice {
    /// The name used on the command line, in the stamp and in log names.
    pub const fn name(self) -> &'static str {
        match self {
            KernelChoice::Bookworm => "bookworm",
            KernelChoice::Backports => "backports",
        }
    }

    /// The APT suite the kernel comes from.
    pub const fn suite(self) -> &'static str {
        match self {
            KernelChoice::Bookworm => BASE_SUITE,
            KernelChoice::Backports => BACKPORTS_SUITE,
        }
    }
}

impl fmt::Display for KernelChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A Debian binary package at one version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Package {
    /// The package name.
    pub name: String,
    /// The exact version (with epoch, if any).
    pub version: String,
}

impl Package {
    /// The file name `apt-get download` gives it (`:` of an epoch becomes `%3a`).
    fn deb_file_name(&self) -> String {
        format!(
            "{}_{}_{DEB_ARCH}.deb",
            self.name,
            self.version.replace(':', "%3a")
        )
    }

    /// The contents of the marker written into its unpacked folder.
    fn marker(&self) -> String {
        format!("{} {}\n", self.name, self.version)
    }
}

impl fmt::Display for Package {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name, self.version)
    }
}

/// One unpacked kernel, ready for QEMU's `-kernel`.
#[derive(Clone, Debug)]
pub struct Kernel {
    /// Which of the two it is.
    pub choice: KernelChoice,
    /// The Debian package it came from.
    pub package: Package,
    /// Its release (`uname -r`), from the `vmlinuz-RELEASE` file name.
    pub release: String,
    /// The raw arm64 `Image`.
    pub image: PathBuf,
    /// The `Image` header.
    pub header: ImageHeader,
}

/// Everything the Linux test guest is made of.
#[derive(Clone, Debug)]
pub struct Kernels {
    /// Linux 6.1 from `bookworm`.
    pub bookworm: Kernel,
    /// Linux 6.12 from `bookworm-backports`.
    pub backports: Kernel,
    /// The static busybox binary.
    pub busybox: PathBuf,
    /// The package busybox came from.
    pub busybox_package: Package,
}

impl Kernels {
    /// The kernel `choice` names.
    pub fn get(&self, choice: KernelChoice) -> &Kernel {
        match choice {
            KernelChoice::Bookworm => &self.bookworm,
            KernelChoice::Backports => &self.backports,
        }
    }
}

/// Whether [`ensure_kernels_with`] may use what is cached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fetch {
    /// Use the cache when it is complete; no network access then.
    IfMissing,
    /// `apt-get update` and resolve the versions again; download only what
    /// changed.
    Refresh,
}

/// The kernels and busybox, from the cache or fetched.
///
/// # Errors
/// When the host has no `bookworm` APT entry, or an APT or `dpkg-deb`
/// command fails (the error names the command and quotes its stderr), or a
/// package does not hold what it should.
pub fn ensure_kernels(ws: &Workspace) -> Result<Kernels> {
    ensure_kernels_with(ws, Fetch::IfMissing)
}

/// [`ensure_kernels`] with a choice of cache use.
///
/// # Errors
/// As [`ensure_kernels`].
pub fn ensure_kernels_with(ws: &Workspace, fetch: Fetch) -> Result<Kernels> {
    let linux_dir = ws.xtask_dir().join("linux");
    let stamp_path = linux_dir.join(STAMP);
    let cached = std::fs::read_to_string(&stamp_path)
        .ok()
        .and_then(|text| Selection::from_stamp(&text));
    if fetch == Fetch::IfMissing
        && let Some(selection) = &cached
        && let Ok(kernels) = locate(&linux_dir, selection)
    {
        return Ok(kernels);
    }

    let apt = PrivateApt::prepare(&ws.xtask_dir().join("apt"))?;
    println!(
        "linux: apt-get update (private APT_CONFIG {})",
        apt.config.display()
    );
    apt.update()?;
    let selection = Selection {
        bookworm: apt.kernel_in(KernelChoice::Bookworm.suite())?,
        backports: apt.kernel_in(KernelChoice::Backports.suite())?,
        busybox: apt.package_in(BUSYBOX_PACKAGE, BASE_SUITE)?,
    };
    let missing: Vec<&Package> = selection
        .packages()
        .into_iter()
        .filter(|p| !is_unpacked(&linux_dir, p))
        .collect();
    if !missing.is_empty() {
        let names: Vec<String> = missing.iter().map(|p| p.to_string()).collect();
        println!("linux: downloading {}", names.join(", "));
        apt.download(&missing)?;
        for package in &missing {
            unpack(&apt.debs_dir(), &linux_dir, package)?;
        }
    }
    std::fs::write(&stamp_path, selection.to_stamp())
        .with_context(|| format!("writing {}", stamp_path.display()))?;
    locate(&linux_dir, &selection)
        .with_context(|| format!("after unpacking into {}", linux_dir.display()))
}

// --- the selection and its stamp ---------------------------------------------

/// The three packages, by role.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Selection {
    bookworm: Package,
    backports: Package,
    busybox: Package,
}

impl Selection {
    const ROLES: [&'static str; 3] = ["bookworm", "backports", "busybox"];

    fn packages(&self) -> [&Package; 3] {
        [&self.bookworm, &self.backports, &self.busybox]
    }

    /// `ROLE PACKAGE VERSION` lines under a comment.
    fn to_stamp(&self) -> String {
        let mut text = String::from(
            "# cargo xtask (tools/xtask/src/linux.rs): packages unpacked in this folder.\n",
        );
        for (role, package) in Self::ROLES.iter().zip(self.packages()) {
            text.push_str(&format!("{role} {} {}\n", package.name, package.version));
        }
        text
    }

    /// The selection a stamp records, if it names all three roles.
    fn from_stamp(text: &str) -> Option<Selection> {
        let find = |role: &str| {
            text.lines().find_map(|line| {
                let mut words = line.split_whitespace();
                (words.next() == Some(role)).then_some(())?;
                let (name, version) = (words.next()?, words.next()?);
                Some(Package {
                    name: name.into(),
                    version: version.into(),
                })
            })
        };
        Some(Selection {
            bookworm: find("bookworm")?,
            backports: find("backports")?,
            busybox: find("busybox")?,
        })
    }
}

// --- the unpacked files --------------------------------------------------------

/// Whether `package` is unpacked, at this version, under `linux_dir`.
fn is_unpacked(linux_dir: &Path, package: &Package) -> bool {
    let marker = linux_dir.join(&package.name).join(UNPACKED_MARKER);
    std::fs::read_to_string(marker).is_ok_and(|text| text == package.marker())
}

/// The kernels and busybox of `selection`, if all are unpacked and sound.
fn locate(linux_dir: &Path, selection: &Selection) -> Result<Kernels> {
    for package in selection.packages() {
        if !is_unpacked(linux_dir, package) {
            bail!("{package} is not unpacked in {}", linux_dir.display());
        }
    }
    let busybox = linux_dir.join(&selection.busybox.name).join(BUSYBOX_PATH);
    if !busybox.is_file() {
        bail!(
            "{} holds no {BUSYBOX_PATH} ({})",
            selection.busybox,
            busybox.display()
        );
    }
    Ok(Kernels {
        bookworm: locate_kernel(linux_dir, KernelChoice::Bookworm, &selection.bookworm)?,
        backports: locate_kernel(linux_dir, KernelChoice::Backports, &selection.backports)?,
        busybox,
        busybox_package: selection.busybox.clone(),
    })
}

/// Finds the one `boot/vmlinuz-RELEASE` of an unpacked kernel package and
/// checks its `Image` header.
fn locate_kernel(linux_dir: &Path, choice: KernelChoice, package: &Package) -> Result<Kernel> {
    let boot = linux_dir.join(&package.name).join("boot");
    let mut found: Vec<(String, PathBuf)> = std::fs::read_dir(&boot)
        .with_context(|| format!("listing {}", boot.display()))?
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let release = name.strip_prefix("vmlinuz-")?.to_string();
            Some((release, entry.path()))
        })
        .collect();
    let Some((release, image)) = found.pop() else {
        bail!("{package}: no boot/vmlinuz-* in {}", boot.display());
    };
    if !found.is_empty() {
        bail!(
            "{package}: more than one boot/vmlinuz-* in {}",
            boot.display()
        );
    }
    let header = read_image_header(&image)?;
    Ok(Kernel {
        choice,
        package: package.clone(),
        release,
        image,
        header,
    })
}

fn read_image_header(path: &Path) -> Result<ImageHeader> {
    use std::io::Read;
    let mut bytes = Vec::with_capacity(ImageHeader::LEN);
    std::fs::File::open(path)
        .and_then(|file| file.take(ImageHeader::LEN as u64).read_to_end(&mut bytes))
        .with_context(|| format!("reading {}", path.display()))?;
    ImageHeader::parse(&bytes).with_context(|| format!("checking the kernel {}", path.display()))
}

/// Unpacks the downloaded `package` into `linux_dir/<name>/`, through a
/// `.partial` folder so that an interrupted run leaves nothing that looks
/// complete; removes the `.deb` afterwards.
fn unpack(debs_dir: &Path, linux_dir: &Path, package: &Package) -> Result<()> {
    let deb = debs_dir.join(package.deb_file_name());
    if !deb.is_file() {
        bail!(
            "`apt-get download` did not leave {} (found: {})",
            deb.display(),
            list_dir(debs_dir)
        );
    }
    let target = linux_dir.join(&package.name);
    let partial = linux_dir.join(format!("{}.partial", package.name));
    for dir in [&partial, &target] {
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        }
    }
    std::fs::create_dir_all(&partial).with_context(|| format!("creating {}", partial.display()))?;
    let mut command = Command::new("dpkg-deb");
    command.arg("-x").arg(&deb).arg(&partial);
    run_checked(command, "dpkg-deb -x")?;
    let marker = partial.join(UNPACKED_MARKER);
    std::fs::write(&marker, package.marker())
        .with_context(|| format!("writing {}", marker.display()))?;
    std::fs::rename(&partial, &target)
        .with_context(|| format!("renaming {} to {}", partial.display(), target.display()))?;
    std::fs::remove_file(&deb).with_context(|| format!("removing {}", deb.display()))?;
    Ok(())
}

fn list_dir(dir: &Path) -> String {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    if names.is_empty() {
        "nothing".into()
    } else {
        names.join(", ")
    }
}

// --- the private APT setup --------------------------------------------------------

/// APT confined to one folder.
struct PrivateApt {
    /// The folder (`target/xtask/apt`).
    dir: PathBuf,
    /// Its `apt.conf`, given to every command as `APT_CONFIG`.
    config: PathBuf,
}

impl PrivateApt {
    /// Writes the folder's layout, its source entry and its configuration.
    fn prepare(dir: &Path) -> Result<PrivateApt> {
        let entry = host_base_entry(Path::new("/"))?;
        let sources = sources_stanza(&entry)?;
        for sub in [
            "etc/apt.conf.d",
            "etc/preferences.d",
            "etc/sources.list.d",
            "etc/trusted.gpg.d",
            "etc/auth.conf.d",
            "state/lists/partial",
            "cache/archives/partial",
            "log",
            "debs",
        ] {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path)
                .with_context(|| format!("creating {}", path.display()))?;
        }
        let status = dir.join("state/status");
        std::fs::write(&status, "").with_context(|| format!("writing {}", status.display()))?;
        let host_settings = host_acquire_settings(dir);
        let root = nix::unistd::geteuid().is_root();
        let config_text = config_text(dir, entry.signed_by.is_some(), root, &host_settings)?;
        let files = [
            ("etc/sources.list.d/bulkhead-linux.sources", sources),
            ("apt.conf", config_text),
        ];
        for (name, text) in files {
            let path = dir.join(name);
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(PrivateApt {
            dir: dir.to_path_buf(),
            config: dir.join("apt.conf"),
        })
    }

    fn debs_dir(&self) -> PathBuf {
        self.dir.join("debs")
    }

    /// `program` with this configuration and the C locale (parseable output).
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command
            .env("APT_CONFIG", &self.config)
            .env("LC_ALL", "C")
            .current_dir(&self.dir);
        command
    }

    fn update(&self) -> Result<()> {
        let mut command = self.command("apt-get");
        command.args(["-q", "update"]);
        run_checked(command, "apt-get update").map(drop)
    }

    /// The first stanza of `apt-cache show NAME/SUITE`.
    fn show(&self, name: &str, suite: &str) -> Result<String> {
        let mut command = self.command("apt-cache");
        command.args(["show", &format!("{name}/{suite}")]);
        let text = run_checked(command, &format!("apt-cache show {name}/{suite}"))?;
        Ok(text.split("\n\n").next().unwrap_or_default().to_string())
    }

    /// `name` as `suite` has it.
    fn package_in(&self, name: &str, suite: &str) -> Result<Package> {
        let stanza = self.show(name, suite)?;
        let version = stanza_field(&stanza, "Version")
            .with_context(|| format!("`apt-cache show {name}/{suite}` printed no Version"))?;
        Ok(Package {
            name: name.into(),
            version: version.into(),
        })
    }

    /// The concrete kernel package [`KERNEL_METAPACKAGE`] depends on in `suite`.
    fn kernel_in(&self, suite: &str) -> Result<Package> {
        let stanza = self.show(KERNEL_METAPACKAGE, suite)?;
        let depends = stanza_field(&stanza, "Depends").unwrap_or_default();
        let Some((name, version)) = kernel_dependency(depends) else {
            bail!(
                "{KERNEL_METAPACKAGE} in {suite} depends on no linux-image-*-cloud-arm64 \
                 (Depends: {depends})"
            );
        };
        match version {
            Some(version) => Ok(Package { name, version }),
            None => self.package_in(&name, suite),
        }
    }

    /// `apt-get download NAME=VERSION...` into [`Self::debs_dir`].
    fn download(&self, packages: &[&Package]) -> Result<()> {
        let mut command = self.command("apt-get");
        command
            .current_dir(self.debs_dir())
            .args(["-q", "download"]);
        for package in packages {
            command.arg(format!("{}={}", package.name, package.version));
        }
        run_checked(command, "apt-get download").map(drop)
    }
}

/// Runs `command`; its stdout on success. On failure the error names
/// `what` and quotes stderr. Warnings (`W:` lines) are passed on.
fn run_checked(mut command: Command, what: &str) -> Result<String> {
    let output = command
        .output()
        .with_context(|| format!("cannot run `{what}`"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!(
            "`{what}` failed ({}):\n{}",
            output.status,
            stderr.trim_end()
        );
    }
    for line in stderr.lines().filter(|l| l.starts_with("W:")) {
        eprintln!("linux: {what}: {line}");
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The host's first enabled `deb` entry for [`BASE_SUITE`] under `root`.
fn host_base_entry(root: &Path) -> Result<Entry> {
    apt::read_sources(root)
        .into_iter()
        .flat_map(|(_, entries)| entries)
        .find(|e| !e.uris.is_empty() && e.suites.iter().any(|s| s == BASE_SUITE))
        .with_context(|| {
            format!(
                "no APT entry for Debian '{BASE_SUITE}' in {} or {}/ to take the archive URI from",
                apt::SOURCES_LIST,
                apt::SOURCES_DIR
            )
        })
}

/// The private source entry: the host entry's URIs and key, both suites,
/// arm64 only.
fn sources_stanza(base: &Entry) -> Result<String> {
    if base.uris.is_empty() {
        bail!("the host's '{BASE_SUITE}' APT entry has no URI");
    }
    let mut text = format!(
        "# Written by cargo xtask (tools/xtask/src/linux.rs) from the host's '{BASE_SUITE}' entry.\n\
         Types: deb\nURIs: {}\nSuites: {BASE_SUITE} {BACKPORTS_SUITE}\nComponents: main\n\
         Architectures: {DEB_ARCH}\n",
        base.uris.join(" ")
    );
    if let Some(key) = &base.signed_by {
        text.push_str(&format!("Signed-By: {key}\n"));
    }
    Ok(text)
}

/// Keys of the host configuration that decide how APT reaches the archive
/// (proxies, date checks, retries); everything else of it is left out.
const HOST_ACQUIRE_KEYS: [&str; 6] = [
    "acquire::http::proxy",
    "acquire::https::proxy",
    "acquire::ftp::proxy",
    "acquire::check-valid-until",
    "acquire::check-date",
    "acquire::retries",
];

/// The lines of an `apt-config dump` output whose key is under
/// [`HOST_ACQUIRE_KEYS`], as configuration lines.
fn acquire_settings(dump: &str) -> Vec<String> {
    dump.lines()
        .filter(|line| {
            let key = line
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_lowercase();
            HOST_ACQUIRE_KEYS.iter().any(|k| {
                key.strip_prefix(k)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
            })
        })
        .map(|line| line.trim().to_string())
        .collect()
}

/// [`acquire_settings`] of the host's own configuration (none if
/// `apt-config` fails). The options keep `apt-config` itself away from the
/// host's state: without them it lists the host's package lists (for the
/// languages), stats its dpkg status file and runs `dpkg` for the foreign
/// architectures.
fn host_acquire_settings(private_dir: &Path) -> Vec<String> {
    let mut lists = std::ffi::OsString::from("Dir::State::lists=");
    lists.push(private_dir.join("state/lists"));
    let mut status = std::ffi::OsString::from("Dir::State::status=");
    status.push(private_dir.join("state/status"));
    let output = Command::new("apt-config")
        .args(["-o", &format!("APT::Architectures::={DEB_ARCH}"), "-o"])
        .arg(lists)
        .arg("-o")
        .arg(status)
        .args(["dump", "Acquire"])
        .env_remove("APT_CONFIG")
        .env("LC_ALL", "C")
        .output();
    match output {
        Ok(output) if output.status.success() => {
            acquire_settings(&String::from_utf8_lossy(&output.stdout))
        }
        _ => Vec::new(),
    }
}

/// The private `apt.conf` for the folder `dir`.
///
/// `signed`: the source entry names its key, so no keyring folder is needed
/// (else the host's keyrings are used, read-only). `root`: downloads run as
/// root instead of APT's `_apt` sandbox user, which cannot write into a
/// root-owned build folder.
fn config_text(dir: &Path, signed: bool, root: bool, host_settings: &[String]) -> Result<String> {
    let dir_text = dir
        .to_str()
        .context("the build folder's path is not UTF-8")?;
    if dir_text.contains(['"', '\n']) {
        bail!("the build folder's path {dir_text:?} cannot be quoted in an APT configuration");
    }
    let path = |sub: &str| format!("\"{dir_text}/{sub}\"");
    let mut lines = vec![
        "// Written by cargo xtask (tools/xtask/src/linux.rs): APT for arm64 packages,".to_string(),
        "// confined to this folder; no host dpkg/APT state is read or written.".to_string(),
        format!("APT::Architecture \"{DEB_ARCH}\";"),
        format!("APT::Architectures {{ \"{DEB_ARCH}\"; }};"),
        "APT::Get::Assume-Yes \"true\";".into(),
        "APT::Install-Recommends \"false\";".into(),
        "Acquire::Languages \"none\";".into(),
        "Debug::NoLocking \"1\";".into(),
        format!("Dir::State {};", path("state")),
        format!("Dir::State::status {};", path("state/status")),
        format!("Dir::State::lists {};", path("state/lists")),
        format!(
            "Dir::State::extended_states {};",
            path("state/extended_states")
        ),
        format!("Dir::Cache {};", path("cache")),
        format!("Dir::Cache::archives {};", path("cache/archives")),
        format!("Dir::Log {};", path("log")),
        format!("Dir::Etc {};", path("etc")),
        format!("Dir::Etc::main {};", path("etc/apt.conf")),
        format!("Dir::Etc::parts {};", path("etc/apt.conf.d")),
        format!("Dir::Etc::SourceList {};", path("etc/sources.list")),
        format!("Dir::Etc::SourceParts {};", path("etc/sources.list.d")),
        format!("Dir::Etc::Preferences {};", path("etc/preferences")),
        format!("Dir::Etc::PreferencesParts {};", path("etc/preferences.d")),
        format!("Dir::Etc::netrc {};", path("etc/auth.conf")),
        format!("Dir::Etc::netrcparts {};", path("etc/auth.conf.d")),
    ];
    if signed {
        lines.push(format!("Dir::Etc::Trusted {};", path("etc/trusted.gpg")));
        lines.push(format!(
            "Dir::Etc::TrustedParts {};",
            path("etc/trusted.gpg.d")
        ));
    } else {
        lines.push(format!("Dir::Etc::Trusted \"{HOST_TRUSTED}\";"));
        lines.push(format!("Dir::Etc::TrustedParts \"{HOST_TRUSTED_DIR}\";"));
    }
    if root {
        lines.push("APT::Sandbox::User \"root\";".into());
    }
    if !host_settings.is_empty() {
        lines.push("// From the host's configuration (how to reach the archive):".into());
        lines.extend(host_settings.iter().cloned());
    }
    let mut text = lines.join("\n");
    text.push('\n');
    Ok(text)
}

/// A single-line field of a deb822 stanza.
fn stanza_field<'a>(stanza: &'a str, key: &str) -> Option<&'a str> {
    stanza.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        (!line.starts_with([' ', '\t']) && name.eq_ignore_ascii_case(key)).then(|| value.trim())
    })
}

/// The first `linux-image-*-cloud-arm64` in a `Depends` field, with its
/// `(= VERSION)` when the relation pins one.
fn kernel_dependency(depends: &str) -> Option<(String, Option<String>)> {
    depends
        .split([',', '|'])
        .map(str::trim)
        .find_map(|relation| {
            let (name, rest) = match relation.split_once(|c: char| c.is_whitespace() || c == '(') {
                Some((name, _)) => (name, &relation[name.len()..]),
                None => (relation, ""),
            };
            let name = name.split(':').next().unwrap_or(name); // drop ":arm64"
            let is_kernel = name.starts_with("linux-image-")
                && name.ends_with("-cloud-arm64")
                && name != KERNEL_METAPACKAGE;
            if !is_kernel {
                return None;
            }
            let version = rest
                .trim()
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .and_then(|r| r.trim().strip_prefix('='))
                .map(|v| v.trim().to_string());
            Some((name.to_string(), version))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_dependency_and_its_version_are_found() {
        assert_eq!(
            kernel_dependency("linux-image-6.1.0-50-cloud-arm64 (= 6.1.176-1)"),
            Some((
                "linux-image-6.1.0-50-cloud-arm64".into(),
                Some("6.1.176-1".into())
            ))
        );
        assert_eq!(
            kernel_dependency(
                "initramfs-tools | linux-initramfs-tool, linux-image-6.12.95+deb12-cloud-arm64:arm64"
            ),
            Some(("linux-image-6.12.95+deb12-cloud-arm64".into(), None))
        );
        assert_eq!(kernel_dependency("linux-image-6.1.0-50-arm64 (= 1)"), None);
        assert_eq!(kernel_dependency(""), None);
    }

    #[test]
    fn stanza_fields_are_taken_from_their_own_line() {
        let stanza = "Package: busybox-static\nVersion: 1:1.35.0-4+deb12u1+b1\nDescription: x\n Version: no\n";
        assert_eq!(
            stanza_field(stanza, "Version"),
            Some("1:1.35.0-4+deb12u1+b1")
        );
        assert_eq!(stanza_field(stanza, "depends"), None);
    }

    #[test]
    fn deb_file_names_escape_the_epoch() {
        let package = Package {
            name: "busybox-static".into(),
            version: "1:1.35.0-4+deb12u1+b1".into(),
        };
        assert_eq!(
            package.deb_file_name(),
            "busybox-static_1%3a1.35.0-4+deb12u1+b1_arm64.deb"
        );
    }

    #[test]
    fn the_stamp_round_trips_and_incomplete_stamps_are_ignored() {
        let package = |name: &str, version: &str| Package {
            name: name.into(),
            version: version.into(),
        };
        let selection = Selection {
            bookworm: package("linux-image-6.1.0-50-cloud-arm64", "6.1.176-1"),
            backports: package("linux-image-6.12.95+deb12-cloud-arm64", "6.12.95-1~bpo12+1"),
            busybox: package("busybox-static", "1:1.35.0-4+deb12u1+b1"),
        };
        let text = selection.to_stamp();
        assert_eq!(Selection::from_stamp(&text), Some(selection));
        let without_busybox: String = text
            .lines()
            .filter(|l| !l.starts_with("busybox"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(Selection::from_stamp(&without_busybox), None);
    }

    #[test]
    fn the_private_config_confines_every_apt_folder() {
        let text = config_text(Path::new("/w/target/xtask/apt"), true, true, &[]).unwrap();
        for line in [
            "APT::Architecture \"arm64\";",
            "APT::Architectures { \"arm64\"; };",
            "Dir::State::status \"/w/target/xtask/apt/state/status\";",
            "Dir::Etc::SourceParts \"/w/target/xtask/apt/etc/sources.list.d\";",
            "Dir::Etc::parts \"/w/target/xtask/apt/etc/apt.conf.d\";",
            "Dir::Etc::Preferences \"/w/target/xtask/apt/etc/preferences\";",
            "Dir::Cache \"/w/target/xtask/apt/cache\";",
            "APT::Sandbox::User \"root\";",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
        }
        // Every folder setting points into the private folder (or is a host keyring).
        for line in text.lines().filter(|l| l.starts_with("Dir::")) {
            assert!(line.contains("\"/w/target/xtask/apt/"), "{line}");
        }
        let unsigned = config_text(Path::new("/w"), false, false, &[]).unwrap();
        assert!(unsigned.contains("Dir::Etc::TrustedParts \"/etc/apt/trusted.gpg.d\";"));
        assert!(!unsigned.contains("Sandbox"));
        assert!(config_text(Path::new("/w\"x"), true, true, &[]).is_err());
    }

    #[test]
    fn only_archive_access_settings_are_taken_from_the_host() {
        let dump = "APT::Architecture \"amd64\";\n\
                    Acquire::http::Proxy \"http://proxy:3128\";\n\
                    Acquire::http::Proxy::deb.example \"DIRECT\";\n\
                    Acquire::http::ProxyAutoDetect \"/x\";\n\
                    Acquire::Check-Valid-Until \"false\";\n\
                    Acquire::IndexTargets::deb::DEP-11::MetaKey \"x\";\n\
                    APT::Update::Post-Invoke:: \"rm -f /var/cache/apt/*.bin\";\n";
        assert_eq!(
            acquire_settings(dump),
            [
                "Acquire::http::Proxy \"http://proxy:3128\";",
                "Acquire::http::Proxy::deb.example \"DIRECT\";",
                "Acquire::Check-Valid-Until \"false\";",
            ]
        );
    }

    #[test]
    fn a_failed_command_is_named_with_its_stderr() {
        let mut command = Command::new("sh");
        command.args([
            "-c",
            "echo out; echo 'E: Unable to locate package x' >&2; exit 100",
        ]);
        let err = run_checked(command, "apt-get download x=1")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("`apt-get download x=1` failed (exit status: 100):"),
            "{err}"
        );
        assert!(err.ends_with("\nE: Unable to locate package x"), "{err}");
        let mut command = Command::new("sh");
        command.args(["-c", "echo fine"]);
        assert_eq!(run_checked(command, "sh").unwrap(), "fine\n");
    }

    #[test]
    fn the_source_entry_reuses_the_host_uri_and_key_for_both_suites() {
        let root = std::env::temp_dir().join(format!("xtask-linux-apt-{}", std::process::id()));
        let dir = root.join("etc/apt/sources.list.d");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("debian.sources"),
            "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n\
             Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
             Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n",
        )
        .unwrap();
        let entry = host_base_entry(&root).unwrap();
        let stanza = sources_stanza(&entry).unwrap();
        let parsed = apt::parse_deb822(&stanza);
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].uris, ["http://mirror.example/debian"]);
        assert_eq!(parsed[0].suites, ["bookworm", "bookworm-backports"]);
        assert_eq!(
            parsed[0].signed_by.as_deref(),
            Some("/usr/share/keyrings/debian-archive-keyring.gpg")
        );
        assert!(stanza.contains("\nArchitectures: arm64\n"), "{stanza}");
        std::fs::remove_dir_all(&root).unwrap();
        let err = host_base_entry(&root).unwrap_err();
        assert!(
            err.to_string()
                .contains("no APT entry for Debian 'bookworm'"),
            "{err}"
        );
    }
}
