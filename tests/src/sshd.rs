//! A throwaway OpenSSH server whose PAM stack is a [`PamStack`] (pam_wrapper, so
//! `/etc/pam.d` is never touched), a local user for it to log in, and a scripted
//! keyboard-interactive client (paramiko under `/usr/bin/python3`).
//!
//! ```no_run
//! # use otpgate_tests::*;
//! let stack = PamStack::new()?;
//! stack.service("sshd", "config=/etc/otpgate/otpgate.toml mode=password+otp")?;
//! let sshd = Sshd::start(&stack)?;
//! let user = LocalUser::create("otpgate-t1")?;
//! let login = ssh_login(sshd.port(), user.name(), &["password", "123456"])?;
//! assert!(login.ok);
//! # Ok::<(), HarnessError>(())
//! ```

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;

use crate::binary::{require_binary, require_python_modules, run};
use crate::error::{HarnessError, Result};
use crate::pam::{PamStack, pam_wrapper_turn};
use crate::ports::start_on_free_port;
use crate::process::ServerProcess;

/// The keyboard-interactive client: answers each prompt with the next answer, prints
/// one JSON line with the result and every prompt and instruction seen.
const CLIENT: &str = r#"
import base64, hashlib, hmac, json, re, socket, struct, sys, time
import paramiko
port, user = int(sys.argv[1]), sys.argv[2]
answers = sys.argv[3:]
seen = []
def app_code(text):
    # What an authenticator app shows for the secret printed in `text`, now.
    secret = re.search(r"Secret: ([A-Z2-7]+)", text).group(1)
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    mac = hmac.new(key, struct.pack(">Q", int(time.time()) // 30), hashlib.sha1).digest()
    at = mac[-1] & 15
    return "%06d" % ((struct.unpack(">I", mac[at:at + 4])[0] & 0x7FFFFFFF) % 1000000)
def handler(title, instructions, prompts):
    if instructions:
        seen.append({"info": instructions})
    replies = []
    for prompt, _echo in prompts:
        seen.append({"prompt": prompt})
        answer = answers.pop(0) if answers else ""
        if answer == APP_CODE:
            answer = app_code(instructions + "\n" + prompt)
        replies.append(answer)
    return replies
sock = socket.create_connection(("127.0.0.1", port), timeout=20)
t = paramiko.Transport(sock)
t.start_client(timeout=20)
ok = False
try:
    t.auth_interactive(user, handler)
    ok = t.is_authenticated()
except paramiko.AuthenticationException:
    ok = False
finally:
    t.close()
print(json.dumps({"ok": ok, "seen": seen}))
"#;

/// A running `sshd -D -e` on a loopback port; killed on drop.
#[derive(Debug)]
pub struct Sshd {
    /// Declared first: killed before `dir` goes.
    process: ServerProcess,
    port: u16,
    dir: tempfile::TempDir,
}

impl Sshd {
    /// Starts sshd with `UsePAM yes` and keyboard-interactive only, its PAM service
    /// `sshd` read from `stack` through pam_wrapper.
    pub fn start(stack: &PamStack) -> Result<Self> {
        let sshd = require_binary("/usr/sbin/sshd", &["openssh-server"])?;
        let keygen = require_binary("ssh-keygen", &["openssh-client"])?;
        std::fs::create_dir_all("/run/sshd")
            .map_err(|e| HarnessError::io("creating /run/sshd", e))?;
        let dir = tempfile::Builder::new()
            .prefix("otpgate-sshd-")
            .tempdir()
            .map_err(|e| HarnessError::io("creating a temporary directory", e))?;
        let key = dir.path().join("host_ed25519");
        run(
            Command::new(keygen)
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(&key),
            None,
        )?;
        let (port, process) = start_on_free_port(|port| {
            let config = dir.path().join("sshd_config");
            let text = format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\n\
                 UsePAM yes\nKbdInteractiveAuthentication yes\nPasswordAuthentication no\n\
                 PubkeyAuthentication no\nAuthenticationMethods keyboard-interactive\n\
                 PermitRootLogin no\nUseDNS no\nStrictModes no\nMaxAuthTries 3\n",
                key.display(),
                dir.path().join("sshd.pid").display()
            );
            std::fs::write(&config, text)
                .map_err(|e| HarnessError::io("writing sshd_config", e))?;
            let mut command = Command::new(&sshd);
            command
                .args(["-D", "-e", "-f"])
                .arg(&config)
                .envs(stack.env());
            // Its readiness probe is a connection, served by a process under pam_wrapper.
            let _turn = pam_wrapper_turn();
            let mut process = ServerProcess::spawn("sshd", command, &dir.path().join("sshd.log"))?;
            process.wait_ready(|| TcpStream::connect(("127.0.0.1", port)).is_ok())?;
            Ok((port, process))
        })?;
        Ok(Self { process, port, dir })
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.process.log()).unwrap_or_default()
    }

    /// Its working directory.
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

/// A local account (`useradd -m`), removed with its home on drop (`userdel -r`).
#[derive(Debug)]
pub struct LocalUser {
    name: String,
}

impl LocalUser {
    /// Creates `name`; it must not exist yet.
    pub fn create(name: &str) -> Result<Self> {
        let useradd = require_binary("useradd", &["passwd"])?;
        run(
            Command::new(useradd).args(["-m", "-s", "/bin/sh", name]),
            None,
        )?;
        Ok(Self {
            name: name.to_string(),
        })
    }

    /// The login name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for LocalUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel")
            .args(["-r", "-f", &self.name])
            .output();
    }
}

/// What the client saw.
#[derive(Debug)]
pub struct SshLogin {
    /// Authenticated.
    pub ok: bool,
    /// The prompts, in order.
    pub prompts: Vec<String>,
    /// The instruction (information) texts, in order.
    pub infos: Vec<String>,
    /// The client's raw output.
    pub output: String,
}

/// An answer for [`ssh_login`]: the code an authenticator app would show now for the
/// secret printed in the prompt's text (`Secret: BASE32`), as a user who enrolls at
/// the first login types it.
pub const APP_CODE: &str = "@app-code";

/// Logs in as `user` with keyboard-interactive, answering prompts with `answers` in
/// order (then empty strings); an answer [`APP_CODE`] is computed from the prompt.
pub fn ssh_login(port: u16, user: &str, answers: &[&str]) -> Result<SshLogin> {
    let python = require_python_modules(&["paramiko"], &["python3-paramiko"])?;
    // sshd runs PAM under pam_wrapper in the process it starts for this connection.
    let _turn = pam_wrapper_turn();
    let out = Command::new(python)
        .args([
            "-c",
            &CLIENT.replace("APP_CODE", &format!("{APP_CODE:?}")),
            &port.to_string(),
            user,
        ])
        .args(answers)
        .output()
        .map_err(|e| HarnessError::io("running the ssh client", e))?;
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    let parsed = parse_result(&line)
        .ok_or_else(|| HarnessError::Usage(format!("the ssh client failed:\n{output}")))?;
    Ok(SshLogin {
        ok: parsed.0,
        prompts: parsed.1,
        infos: parsed.2,
        output,
    })
}

/// `{"ok": true, "seen": [{"prompt": "…"}, {"info": "…"}]}` without a JSON library:
/// the harness is std-only. Strings are JSON-escaped by Python; only `\"`, `\\`, `\n`
/// and `\uXXXX` occur in practice.
fn parse_result(line: &str) -> Option<(bool, Vec<String>, Vec<String>)> {
    let ok = if line.starts_with("{\"ok\": true") {
        true
    } else if line.starts_with("{\"ok\": false") {
        false
    } else {
        return None;
    };
    let mut prompts = Vec::new();
    let mut infos = Vec::new();
    let (_, mut rest) = line.split_once("\"seen\": [")?;
    while let Some(at) = rest.find("{\"") {
        rest = rest.get(at + 2..)?;
        let (key, after) = rest.split_once("\": \"")?;
        let (value, after) = json_string(after)?;
        match key {
            "prompt" => prompts.push(value),
            "info" => infos.push(value),
            _ => {}
        }
        rest = after;
    }
    Some((ok, prompts, infos))
}

/// A JSON string body up to its closing quote, unescaped; and what follows.
fn json_string(text: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, text.get(i + 1..)?)),
            '\\' => match chars.next()?.1 {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'u' => {
                    let hex: String = (0..4).filter_map(|_| chars.next().map(|c| c.1)).collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_output_is_parsed() {
        let (ok, prompts, infos) = parse_result(
            r#"{"ok": true, "seen": [{"prompt": "Password: "}, {"info": "A code \"x\"\nsent"}, {"prompt": "One-time password: "}]}"#,
        )
        .unwrap();
        assert!(ok);
        assert_eq!(prompts, ["Password: ", "One-time password: "]);
        assert_eq!(infos, ["A code \"x\"\nsent"]);
        assert!(!parse_result(r#"{"ok": false, "seen": []}"#).unwrap().0);
        assert!(parse_result("Traceback").is_none());
    }
}
