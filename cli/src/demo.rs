//! `otpgate demo`: a working otpgate with nothing installed — the embedded store, a users
//! file, and a demo user whose app is enrolled, serving RADIUS on loopback (and the
//! portal, when built). Mail goes to the terminal. Each run gives the demo user a fresh
//! app secret and prints it as a QR code and a `radtest` line that works.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use otpgate_core::audit::{AuditLog, Door, RequestContext};
use otpgate_core::clock::{Clock, SystemClock};
use otpgate_core::directory::{Directory, file::hash_password};
use otpgate_core::mail::Mailer;
use otpgate_core::otp::totp;
use otpgate_core::random::{self, OsRandom};
use otpgate_core::secret::{Keys, TotpSecret};
use otpgate_core::service::{CoreConfig, Parts};
use otpgate_core::store::Store;
use otpgate_core::user::UserName;
use otpgate_core::{Core, CoreError};
use serde_json::json;

use crate::Failure;

/// The demo user and password.
const DEMO_USER: &str = "demo";
const DEMO_PASSWORD: &str = "demo-password";
/// A second user, with no app, to try the initial set-up.
const NEW_USER: &str = "student";
const NEW_PASSWORD: &str = "student-password";

fn io(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> Failure {
    let msg = format!("{what} {}", path.display());
    move |e| Failure::Config(format!("{msg}: {e}"))
}

/// Writes a file readable by its owner only, unless it exists.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    if path.exists() {
        return Ok(());
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io("cannot create", path))?;
    f.write_all(bytes).map_err(io("cannot write", path))
}

/// Lays out the demo folder; returns the config path and the RADIUS secret.
fn prepare(
    dir: &Path,
    radius_port: u16,
    portal_port: u16,
) -> Result<(std::path::PathBuf, String), Failure> {
    fs::create_dir_all(dir).map_err(io("cannot create", dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(io("cannot protect", dir))?;
    let key = random::bytes::<32>(&OsRandom)?;
    write_private(&dir.join("master.key"), &key)?;
    let secret = random::hex_id::<8>(&OsRandom)?;
    write_private(&dir.join("radius.secret"), format!("{secret}\n").as_bytes())?;
    let secret = fs::read_to_string(dir.join("radius.secret"))
        .map_err(io("cannot read", &dir.join("radius.secret")))?
        .trim_end()
        .to_string();
    let hash = |pw: &str| hash_password(pw).map_err(|e| Failure::Refused(e.to_string()));
    let users = format!(
        "# Demo users (argon2id hashes). Add more with the same shape.\n\
         [[users]]\nname = \"{DEMO_USER}\"\npassword_hash = \"{}\"\nmail = \"demo@example.org\"\n\
         groups = [\"vpn-staff\"]\ndisplay_name = \"Demo User\"\n\n\
         [[users]]\nname = \"{NEW_USER}\"\npassword_hash = \"{}\"\ndisplay_name = \"New Student\"\n",
        hash(DEMO_PASSWORD)?,
        hash(NEW_PASSWORD)?
    );
    write_private(&dir.join("users.toml"), users.as_bytes())?;
    let config = format!(
        "# otpgate demo configuration (written by `otpgate demo`).\n\
         [directory]\nkind = \"file\"\npath = \"users.toml\"\n\n\
         [store]\nkind = \"embedded\"\npath = \"otpgate.redb\"\n\n\
         [secrets]\nkey_file = \"master.key\"\n\n\
         [totp]\nissuer = \"otpgate demo\"\n\n\
         [radius]\nlisten = [\"127.0.0.1:{radius_port}\"]\nmode = \"auto\"\nreject_delay = \"1s\"\n\n\
         [[radius.clients]]\nname = \"localhost\"\naddress = \"127.0.0.1/32\"\nsecret_file = \"radius.secret\"\n\n\
         [[radius.groups]]\ngroup = \"vpn-staff\"\nfilter_id = \"staff\"\n\n\
         [portal]\nlisten = \"127.0.0.1:{portal_port}\"\npublic_url = \"http://127.0.0.1:{portal_port}\"\n"
    );
    let path = dir.join("otpgate.toml");
    fs::write(&path, config).map_err(io("cannot write", &path))?;
    Ok((path, secret))
}

/// Opens the core with mail printed to the terminal.
async fn open(config: &otpgate_config::Config) -> Result<Core, Failure> {
    let sections = config.require_core()?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let directory = Directory::open(sections.directory, Arc::clone(&clock))
        .await
        .map_err(|e| Failure::Refused(e.to_string()))?;
    let store = Store::open(sections.store)
        .await
        .map_err(|e| Failure::Refused(e.to_string()))?;
    Ok(Core::from_parts(Parts {
        settings: CoreConfig::from_config(config)
            .reset_links_at(config.portal.as_ref().map(|p| p.public_url.clone())),
        directory,
        store,
        keys: Keys::derive(sections.master_key.expose())?,
        mailer: Mailer::Terminal,
        audit: AuditLog::new(&config.audit),
        clock,
        random: Arc::new(OsRandom),
    }))
}

/// Gives the demo user a fresh, confirmed app secret. Confirms with the previous step's
/// code, so the current code is still unused for the first login.
async fn enroll_demo_user(core: &Core) -> Result<TotpSecret, CoreError> {
    let ctx = RequestContext::new(Door::Cli, "demo");
    let user = UserName::parse(DEMO_USER)?;
    core.reset(&user, &ctx).await?;
    let enrollment = core.enroll(&user, &ctx).await?;
    let bytes = data_encoding::BASE32_NOPAD
        .decode(enrollment.secret.as_bytes())
        .map_err(|e| CoreError::Internal(e.to_string()))?;
    let secret = TotpSecret::from_bytes(&bytes);
    let params = core.settings().totp;
    let previous = totp::step_at(SystemClock.now(), params.period).saturating_sub(1);
    core.confirm_enrollment(&user, &totp::code_at_step(&secret, previous, &params), &ctx)
        .await?;
    Ok(secret)
}

pub async fn run(
    dir: &Path,
    radius_port: u16,
    portal_port: u16,
    json: bool,
) -> Result<(), Failure> {
    let (path, radius_secret) = prepare(dir, radius_port, portal_port)?;
    let config = otpgate_config::load(&path)?;
    let core = open(&config).await?;
    let secret = enroll_demo_user(&core).await?;
    let params = core.settings().totp;
    let b32 = secret.to_base32();
    let uri = totp::otpauth_uri(&core.settings().issuer, DEMO_USER, &b32, &params);
    let qr = otpgate_core::qr::terminal(&uri)?;
    let code_now = totp::code_at(&secret, SystemClock.now(), &params);
    let core = Arc::new(core);
    let info = move |addrs: &[std::net::SocketAddr]| {
        let port = addrs
            .first()
            .map_or(radius_port, std::net::SocketAddr::port);
        let radtest = format!(
            "radtest {DEMO_USER} '{DEMO_PASSWORD}CODE' 127.0.0.1:{port} 0 '{radius_secret}'"
        );
        if json {
            println!(
                "{}",
                json!({"config": path, "user": DEMO_USER, "password": DEMO_PASSWORD, "secret": b32.as_str(),
                       "otpauth_uri": uri, "radius": format!("127.0.0.1:{port}"), "radius_secret": radius_secret,
                       "radtest": radtest})
            );
        } else {
            println!(
                "{qr}\notpgate demo is running (Ctrl-C stops it).\n\n\
                 Scan the QR code with an authenticator app, or use the secret {}.\n\
                 Demo user: {DEMO_USER} / {DEMO_PASSWORD}  (its code right now: {code_now})\n\
                 A user with no app yet: {NEW_USER} / {NEW_PASSWORD}\n\n\
                 Log in over RADIUS (password followed by the 6-digit code, no space):\n  {}\n\n\
                 Files: {}  (mail is printed here instead of being sent)",
                b32.as_str(),
                radtest.replace("CODE", &code_now),
                path.parent()
                    .map_or(String::new(), |p| p.display().to_string()),
            );
        }
    };
    crate::serve::run_doors(config, core, info).await
}
