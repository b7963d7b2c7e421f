//! The Debian packages on a clean Debian root, as an administrator would meet them:
//! build both `.deb`s (`scripts/build-packages`), unpack a fresh minimal bookworm
//! (debootstrap, cached as a tarball), `apt-get install` them, run the unit's
//! `ExecStartPre` and `ExecStart` as its user against the harness's slapd and Redis
//! (the chroot shares the host's network, so their loopback ports are reachable), log
//! in with `radclient`, verify the unit, enable the PAM profile and log in with
//! `pamtester`, purge, and run lintian on both packages.
//!
//! Needs root (debootstrap, chroot, mounts) and reaches the Debian mirror of the
//! machine's apt sources once, to build the cache. `./scripts/test` runs it as a step
//! of its own: `cargo test -p otpgate-tests --test integration packages::`.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Instant;

use otpgate_core::secret::TotpSecret;
use otpgate_tests::{
    ConfigBuilder, READY_TIMEOUT, Redis, Slapd, free_udp_port, require_binary, wait_until,
};

use crate::radius::{code, current_step, radclient};

/// Where the Debian root is cached between runs (outside `target/`, which is cleaned).
const CACHE_DIR: &str = "/var/cache/otpgate-test";
const SUITE: &str = "bookworm";
/// What the root gets beyond minbase: the brief's tools plus `adduser` (a dependency of
/// the otpgate package), so a warm run needs no mirror.
const INCLUDE: &str = "systemd,man-db,procps,pamtester,adduser";
/// The RADIUS secret of the host's own client entry (the PAM module uses it too).
const SECRET: &str = "a-long-shared-secret-for-the-package-test";
/// The server-mode module's size limit.
const MAX_SERVER_MODULE: u64 = 2 * 1024 * 1024;
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `target/`: this test runs as `target/<profile>/deps/integration-…`.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().to_path_buf()
}

/// Runs `command`; panics with its output unless it succeeds.
fn run(command: &mut Command) -> Output {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed ({:?}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The Debian mirror of this machine's apt sources (one-line `.list` or deb822
/// `.sources`): the first one that serves the suite itself.
fn mirror() -> String {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = dir.filter_map(|e| Some(e.ok()?.path())).collect();
        more.sort();
        files.extend(more);
    }
    for file in files {
        let name = file.to_string_lossy().to_string();
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        if name.ends_with(".list") {
            for line in text.lines() {
                let words: Vec<&str> = line.split_whitespace().collect();
                if let ["deb", rest @ ..] = words.as_slice() {
                    let rest: Vec<&str> = rest
                        .iter()
                        .filter(|w| !w.starts_with('['))
                        .copied()
                        .collect();
                    if rest.len() >= 2 && rest[1] == SUITE {
                        return rest[0].to_string();
                    }
                }
            }
        } else if name.ends_with(".sources") {
            for stanza in text.split("\n\n") {
                let field = |key: &str| {
                    stanza
                        .lines()
                        .find_map(|l| l.strip_prefix(key))
                        .map(str::trim)
                        .unwrap_or_default()
                        .to_string()
                };
                if field("Suites:").split_whitespace().any(|s| s == SUITE) {
                    if let Some(uri) = field("URIs:").split_whitespace().next() {
                        return uri.to_string();
                    }
                }
            }
        }
    }
    panic!("no apt source for {SUITE} in /etc/apt/sources.list(.d)");
}

/// The cached tarball of a clean root, made with debootstrap when missing.
fn cached_root() -> PathBuf {
    let tarball = Path::new(CACHE_DIR).join(format!("{SUITE}-minbase.tar"));
    if tarball.exists() {
        return tarball;
    }
    let debootstrap = require_binary("debootstrap", &["debootstrap"]).unwrap();
    std::fs::create_dir_all(CACHE_DIR).unwrap();
    let build = tempfile::Builder::new()
        .prefix("root-")
        .tempdir_in(CACHE_DIR)
        .unwrap();
    let root = build.path().join("root");
    let started = Instant::now();
    run(Command::new(debootstrap)
        .args(["--variant=minbase", &format!("--include={INCLUDE}"), SUITE])
        .arg(&root)
        .arg(mirror()));
    // Package lists for apt inside (dependencies resolve without the mirror later).
    run(Command::new("chroot")
        .arg(&root)
        .args(["apt-get", "update", "-q"])
        .env("PATH", PATH));
    let partial = tarball.with_extension("tar.partial");
    run(Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&partial)
        .arg("."));
    std::fs::rename(&partial, &tarball).unwrap();
    eprintln!(
        "packages: debootstrap and cache took {:.0?}",
        started.elapsed()
    );
    tarball
}

/// A fresh copy of the cached root with /proc, /dev and /dev/pts bound into it;
/// unmounted on drop, and its files removed only once nothing is mounted below it.
struct Chroot {
    dir: Option<tempfile::TempDir>,
    mounted: Vec<PathBuf>,
}

impl Chroot {
    fn fresh() -> Self {
        let tarball = cached_root();
        let dir = tempfile::Builder::new()
            .prefix("otpgate-debian-")
            .tempdir()
            .unwrap();
        run(Command::new("tar")
            .arg("-C")
            .arg(dir.path())
            .arg("-xf")
            .arg(&tarball));
        let mut chroot = Self {
            dir: Some(dir),
            mounted: Vec::new(),
        };
        for (what, args) in [
            ("proc", &["-t", "proc", "proc"][..]),
            ("dev", &["--bind", "/dev"][..]),
            ("dev/pts", &["--bind", "/dev/pts"][..]),
        ] {
            let target = chroot.root().join(what);
            run(Command::new("mount").args(args).arg(&target));
            chroot.mounted.push(target);
        }
        std::fs::copy("/etc/resolv.conf", chroot.root().join("etc/resolv.conf")).ok();
        chroot
    }

    fn root(&self) -> &Path {
        self.dir.as_ref().unwrap().path()
    }

    /// A path inside the root.
    fn path(&self, inside: &str) -> PathBuf {
        self.root().join(inside.trim_start_matches('/'))
    }

    /// `chroot ROOT sh -c SCRIPT`, not checked.
    fn sh_output(&self, script: &str, stdin: &str) -> Output {
        let mut child = Command::new("chroot")
            .arg(self.root())
            .args(["/bin/sh", "-c", script])
            .env_clear()
            .env("PATH", PATH)
            .env("LC_ALL", "C")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        // A closed pipe means the command did not read everything: its result says so.
        let _ = input.write_all(stdin.as_bytes());
        drop(input);
        child.wait_with_output().unwrap()
    }

    /// `chroot ROOT sh -c SCRIPT`, which must succeed; its output.
    fn sh(&self, script: &str) -> String {
        let out = self.sh_output(script, "");
        assert!(
            out.status.success(),
            "in the chroot: {script}\n{}",
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes `contents` to `inside` with owner and mode (as the administrator would).
    fn write(&self, inside: &str, contents: &str, owner: &str, mode: u32) {
        let path = self.path(inside);
        std::fs::write(&path, contents).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        self.sh(&format!("chown {owner} {inside}"));
    }
}

impl Drop for Chroot {
    fn drop(&mut self) {
        let mut all_gone = true;
        for target in self.mounted.iter().rev() {
            let plain = Command::new("umount").arg(target).status();
            if !plain.is_ok_and(|s| s.success()) {
                let lazy = Command::new("umount").arg("-l").arg(target).status();
                all_gone &= lazy.is_ok_and(|s| s.success());
            }
        }
        let root = self.root().to_string_lossy().into_owned();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        all_gone &= !mounts.contains(&root);
        if !all_gone {
            // Never delete through a mount of the host's /dev: leave the folder.
            if let Some(dir) = self.dir.take() {
                eprintln!("packages: {root} still has mounts; left in place");
                let _ = dir.keep();
            }
        }
    }
}

/// `otpgate serve` as the unit starts it, killed on drop.
struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The value of `key=` in the unit, split into words (`ExecStart=…`).
fn unit_value(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in the unit:\n{unit}"))
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Builds both packages; returns `(otpgate.deb, libpam-otpgate.deb)`.
fn build_packages() -> (PathBuf, PathBuf) {
    let out = run(Command::new(workspace().join("scripts/build-packages"))
        .env("CARGO_TARGET_DIR", target_dir()));
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    let find = |prefix: &str| {
        listed
            .lines()
            .map(PathBuf::from)
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
            })
            .unwrap_or_else(|| panic!("no {prefix}*.deb in:\n{listed}"))
    };
    (find("otpgate_"), find("libpam-otpgate_"))
}

fn lintian(debs: &[&Path]) {
    let lintian = require_binary("lintian", &["lintian"]).unwrap();
    let out = Command::new(lintian)
        .args([
            "--fail-on",
            "error",
            "--display-info",
            "--tag-display-limit",
            "0",
        ])
        .args(debs)
        .output()
        .unwrap();
    eprintln!("packages: lintian:\n{}", text(&out));
    assert!(
        out.status.success(),
        "lintian reports errors:\n{}",
        text(&out)
    );
}

/// The config the administrator writes: the harness's directory and Redis, RADIUS on
/// loopback with this host's client entry (a PAM host's: the password is checked by
/// the host, reasons are told), and `[pam]` for the module on the same host.
fn configure(chroot: &Chroot, slapd: &Slapd, redis: &Redis, radius: SocketAddr) {
    let scratch = tempfile::tempdir().unwrap();
    let written = ConfigBuilder::new(slapd)
        .redis(redis)
        .set("totp", "skew_steps", "5")
        .extra(&format!(
            "[audit]\nfile = \"/var/log/otpgate/audit.log\"\n\n\
             [radius]\nlisten = [\"{radius}\"]\nreject_delay = \"10ms\"\n\n\
             [[radius.clients]]\nname = \"this-host\"\naddress = \"127.0.0.1/32\"\n\
             secret_file = \"/etc/otpgate/radius.secret\"\npassword_checked_by_client = true\n\
             reject_reasons = true\n\n\
             [pam]\nbackend = \"server\"\nservers = [\"{radius}\"]\n\
             secret_file = \"/etc/otpgate/radius.secret\"\ntimeout = \"2s\"\nretries = 1\n"
        ))
        .write_in(scratch.path())
        .unwrap();
    // The harness writes its secrets beside the file; the package's master key stays.
    let config = std::fs::read_to_string(written)
        .unwrap()
        .replace(&*scratch.path().to_string_lossy(), "/etc/otpgate");
    std::fs::write(chroot.path("/etc/otpgate/otpgate.toml"), config).unwrap();
    chroot.write(
        "/etc/otpgate/ldap.secret",
        &format!("{}\n", slapd.bind_password()),
        "root:otpgate",
        0o640,
    );
    chroot.write(
        "/etc/otpgate/radius.secret",
        &format!("{SECRET}\n"),
        "root:otpgate",
        0o640,
    );
}

/// pamtester in the chroot for `user` on a service that includes common-auth, with
/// `answers` one a line; `(succeeded, output)`.
fn pamtester(chroot: &Chroot, user: &str, answers: &[&str]) -> (bool, String) {
    let input: String = answers.iter().map(|a| format!("{a}\n")).collect();
    let out = chroot.sh_output(
        &format!("pamtester otpgate-test {user} authenticate"),
        &input,
    );
    let output = text(&out);
    let succeeded = output.contains("successfully authenticated");
    assert_eq!(succeeded, out.status.success(), "{output}");
    (succeeded, output)
}

#[test]
fn the_packages_install_start_log_in_and_purge_on_a_clean_debian() {
    let started = Instant::now();
    let (otpgate_deb, pam_deb) = build_packages();
    let built = started.elapsed();
    lintian(&[&otpgate_deb, &pam_deb]);

    let slapd = Slapd::start().unwrap();
    let redis = Redis::start().unwrap();
    let chroot = Chroot::fresh();
    let unpacked = started.elapsed();

    // Install with apt, which resolves the dependencies.
    for deb in [&otpgate_deb, &pam_deb] {
        std::fs::copy(deb, chroot.path("/tmp").join(deb.file_name().unwrap())).unwrap();
    }
    chroot.sh("apt-get install -y -q /tmp/otpgate_*.deb /tmp/libpam-otpgate_*.deb");
    // Idempotent: configuring again changes nothing and fails nothing.
    let before = chroot.sh("stat -c '%n %U:%G %a' /etc/otpgate /etc/otpgate/* /var/lib/otpgate /var/log/otpgate; md5sum /etc/otpgate/master.key");
    chroot.sh("dpkg-reconfigure otpgate");
    let after = chroot.sh("stat -c '%n %U:%G %a' /etc/otpgate /etc/otpgate/* /var/lib/otpgate /var/log/otpgate; md5sum /etc/otpgate/master.key");
    assert_eq!(before, after, "a second configure changed files");
    for expected in [
        "/etc/otpgate root:otpgate 750",
        "/etc/otpgate/otpgate.toml root:otpgate 640",
        "/etc/otpgate/master.key otpgate:otpgate 600",
        "/var/lib/otpgate otpgate:otpgate 700",
        "/var/log/otpgate otpgate:otpgate 750",
    ] {
        assert!(before.contains(expected), "{expected} not in:\n{before}");
    }
    assert_eq!(size(&chroot.path("/etc/otpgate/master.key")), 32);
    assert!(
        chroot
            .sh("dpkg-query --showformat='${Conffiles}' --show otpgate")
            .contains("/etc/otpgate/otpgate.toml"),
        "the configuration is not a conffile"
    );

    // What is installed: stripped binaries, the multiarch module folder, docs.
    let triplet = String::from_utf8(
        run(Command::new("dpkg-architecture").arg("-qDEB_HOST_MULTIARCH")).stdout,
    )
    .unwrap();
    let security = format!("/usr/lib/{}/security", triplet.trim());
    let server_module = chroot.path(&format!("{security}/pam_otpgate.so"));
    let direct_module = chroot.path(&format!("{security}/pam_otpgate_direct.so"));
    let binary = chroot.path("/usr/bin/otpgate");
    for file in [&server_module, &direct_module, &binary] {
        let file_type = text(&run(Command::new("file").arg("-b").arg(file)));
        assert!(
            file_type.contains("stripped") && !file_type.contains("not stripped"),
            "{}: {file_type}",
            file.display()
        );
    }
    assert!(
        size(&server_module) <= MAX_SERVER_MODULE,
        "pam_otpgate.so is {} bytes",
        size(&server_module)
    );
    // Without an async runtime or backend clients: none of their code (and so none of
    // their source paths, which panic locations keep) is in the server-mode module;
    // the direct-mode module, which has them, shows the check can fail.
    let server_bytes = std::fs::read(&server_module).unwrap();
    let direct_bytes = std::fs::read(&direct_module).unwrap();
    for crate_dir in [&b"/tokio-1."[..], b"/ldap3-", b"/redis-", b"/lettre-"] {
        let shown = String::from_utf8_lossy(crate_dir);
        assert!(
            !contains(&server_bytes, crate_dir),
            "{shown} in pam_otpgate.so"
        );
        assert!(
            contains(&direct_bytes, crate_dir),
            "{shown} not in pam_otpgate_direct.so"
        );
    }
    for page in ["otpgate.8", "pam_otpgate.8", "otpgate.toml.5"] {
        let section = &page[page.len() - 1..];
        assert!(
            chroot
                .path(&format!("/usr/share/man/man{section}/{page}.gz"))
                .exists(),
            "no manual page {page}"
        );
    }
    assert!(
        chroot
            .sh("man -P cat otpgate 2>/dev/null")
            .contains("user enroll")
    );
    assert!(
        chroot
            .path("/usr/share/bash-completion/completions/otpgate")
            .exists()
    );
    assert!(
        chroot
            .path("/usr/share/zsh/vendor-completions/_otpgate")
            .exists()
    );
    assert!(chroot.path("/etc/logrotate.d/otpgate").exists());
    eprintln!(
        "packages: otpgate.deb {} B, libpam-otpgate.deb {} B; /usr/bin/otpgate {} B, \
         pam_otpgate.so {} B, pam_otpgate_direct.so {} B",
        size(&otpgate_deb),
        size(&pam_deb),
        size(&binary),
        size(&server_module),
        size(&direct_module)
    );

    // The unit: verified, then its commands run as its user.
    let unit_path = chroot.sh("dpkg -L otpgate | grep '/otpgate.service$'");
    let unit_path = unit_path.trim();
    let verify = chroot.sh_output(&format!("systemd-analyze verify {unit_path}"), "");
    assert!(
        verify.status.success(),
        "systemd-analyze verify:\n{}",
        text(&verify)
    );
    let unit = std::fs::read_to_string(chroot.path(unit_path)).unwrap();
    let user = unit_value(&unit, "User").join("");
    let group = unit_value(&unit, "Group").join("");
    let as_unit = |command: &[String]| {
        format!(
            "exec setpriv --reuid {user} --regid {group} --init-groups -- {}",
            command.join(" ")
        )
    };
    let radius: SocketAddr = format!("127.0.0.1:{}", free_udp_port().unwrap())
        .parse()
        .unwrap();
    configure(&chroot, &slapd, &redis, radius);
    chroot.sh(&as_unit(&unit_value(&unit, "ExecStartPre")));
    let service = Service(
        Command::new("chroot")
            .arg(chroot.root())
            .args(["/bin/sh", "-c", &as_unit(&unit_value(&unit, "ExecStart"))])
            .env_clear()
            .env("PATH", PATH)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let probe = "User-Name = \"nobody\"\nUser-Password = \"x\"";
    assert!(
        wait_until(READY_TIMEOUT, || radclient(radius, SECRET, probe, true, 1)
            .code
            .is_some()),
        "otpgate serve never answered on {radius}"
    );

    // Enroll as the administrator would, then log in over RADIUS.
    let base = current_step();
    let enrolled = chroot.sh("otpgate user enroll alice --json");
    let secret = enrolled
        .split_once("\"secret\":\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(s, _)| s.to_string())
        .unwrap_or_else(|| panic!("no secret in {enrolled}"));
    let secret = TotpSecret::from_bytes(
        &data_encoding::BASE32_NOPAD
            .decode(secret.as_bytes())
            .unwrap(),
    );
    chroot.sh(&format!(
        "otpgate user confirm alice {}",
        code(&secret, base - 1)
    ));
    let login = |c: &str| {
        radclient(
            radius,
            SECRET,
            &format!("User-Name = \"alice\"\nUser-Password = \"{c}\""),
            true,
            3,
        )
    };
    let right = login(&code(&secret, base));
    assert_eq!(
        right.code.as_deref(),
        Some("Access-Accept"),
        "{}",
        right.output
    );
    let wrong = login(&code(&secret, base + 100));
    assert_eq!(
        wrong.code.as_deref(),
        Some("Access-Reject"),
        "{}",
        wrong.output
    );
    assert!(
        std::fs::read_to_string(chroot.path("/var/log/otpgate/audit.log"))
            .unwrap()
            .contains("alice"),
        "no audit line for alice"
    );

    // The PAM profile: pam_unix checks local passwords; pam_otpgate then passes root
    // and local accounts on (unknown to the directory) and asks alice for the code.
    chroot.sh("pam-auth-update --enable otpgate && \
         printf 'auth include common-auth\\n' > /etc/pam.d/otpgate-test && \
         useradd -m localuser && useradd -m alice && \
         printf 'root:root-pw\\nlocaluser:local-pw\\nalice:alice-pw-1\\n' | chpasswd");
    let common_auth = std::fs::read_to_string(chroot.path("/etc/pam.d/common-auth")).unwrap();
    assert!(
        common_auth.contains("pam_otpgate.so mode=otp-only ignore_unknown_user"),
        "{common_auth}"
    );
    let (ok, out) = pamtester(&chroot, "root", &["root-pw"]);
    assert!(ok && !out.contains("One-time password"), "root: {out}");
    let (ok, out) = pamtester(&chroot, "root", &["wrong-pw"]);
    assert!(!ok, "root with a wrong password: {out}");
    let (ok, out) = pamtester(&chroot, "localuser", &["local-pw"]);
    assert!(ok && !out.contains("One-time password"), "localuser: {out}");
    let (ok, out) = pamtester(&chroot, "alice", &["alice-pw-1", &code(&secret, base + 1)]);
    assert!(ok && out.contains("One-time password"), "alice: {out}");
    let (ok, out) = pamtester(
        &chroot,
        "alice",
        &["alice-pw-1", &code(&secret, base + 100)],
    );
    assert!(
        !ok && out.contains("One-time password"),
        "alice, wrong code: {out}"
    );
    drop(service);

    // Purge: nothing of the packages is left but the administrator's own secrets.
    chroot.sh("apt-get purge -y -q otpgate libpam-otpgate");
    let left = chroot.sh_output("dpkg -S otpgate", "");
    assert!(
        !left.status.success(),
        "dpkg still knows files: {}",
        text(&left)
    );
    let left = chroot.sh("find /etc/otpgate /var/lib/otpgate /var/log/otpgate /etc/logrotate.d/otpgate /usr/share/pam-configs/otpgate 2>/dev/null || true");
    let mut left: Vec<&str> = left.lines().collect();
    left.sort_unstable();
    assert_eq!(
        left,
        [
            "/etc/otpgate",
            "/etc/otpgate/ldap.secret",
            "/etc/otpgate/radius.secret"
        ],
        "left after purge"
    );
    let common_auth = std::fs::read_to_string(chroot.path("/etc/pam.d/common-auth")).unwrap();
    assert!(!common_auth.contains("pam_otpgate"), "{common_auth}");
    assert!(!server_module.exists());
    eprintln!(
        "packages: built in {built:.0?}, root ready at {unpacked:.0?}, done in {:.0?}",
        started.elapsed()
    );
}
