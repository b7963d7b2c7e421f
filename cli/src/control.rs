//! The control socket: how the CLI works beside a running `otpgate serve`.
//!
//! The embedded store (redb) belongs to one process, so while the server runs, the
//! CLI cannot open it. With `[control] socket` configured, the server listens on that
//! Unix socket (mode 0660, owned by its user and group: `otpgate:otpgate` under the
//! packaged unit) and runs admin and helpdesk commands for the CLI; the CLI uses it
//! whenever a server answers there, and opens the store itself otherwise.
//!
//! The server checks every peer's credentials (`SO_PEERCRED`): root, the server's own
//! user and members of the socket's group are served; anyone else gets a refusal
//! (the socket's mode already keeps them out; this holds even if the mode is changed).
//! One request per connection, in the [`crate::protocol`] format, with a deadline.

use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::unistd::{Gid, Group, Uid, User};
use otpgate_core::Core;
use otpgate_core::audit::{Door, RequestContext};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::Failure;
use crate::protocol::{self, Command, Reply, Request, Response};

/// The socket's mode: owner and group read and write.
const SOCKET_MODE: u32 = 0o660;
/// Connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 16;
/// How long a peer may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a command may take (mail is sent inside `user email set`).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// The bound control socket; the file is removed on drop.
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
    /// Who owns the socket file (the server's user and group).
    owner: (u32, u32),
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds the control socket at `path`, mode 0660. A socket file left behind by a
/// server that is gone is replaced; one that a server still answers on is an error.
pub async fn bind(path: &Path) -> Result<ControlSocket, Failure> {
    let fail = |what: &str, e: std::io::Error| {
        Failure::Config(format!(
            "control: cannot {what} the socket {}: {e}",
            path.display()
        ))
    };
    if let Ok(existing) = std::fs::symlink_metadata(path) {
        // Never remove anything but a socket: a mistyped path must not cost a file.
        if !existing.file_type().is_socket() {
            return Err(Failure::Config(format!(
                "control: {} exists and is not a socket",
                path.display()
            )));
        }
        if UnixStream::connect(path).await.is_ok() {
            return Err(Failure::Config(format!(
                "control: another otpgate serve answers on {}",
                path.display()
            )));
        }
        std::fs::remove_file(path).map_err(|e| fail("remove the stale", e))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| fail("bind", e))?;
    let mut socket = ControlSocket {
        listener,
        path: path.to_path_buf(),
        owner: (0, 0),
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
        .map_err(|e| fail("set the mode of", e))?;
    let meta = std::fs::metadata(path).map_err(|e| fail("inspect", e))?;
    socket.owner = (meta.uid(), meta.gid());
    Ok(socket)
}

/// Serves CLI requests on `socket` with `core` until `shutdown`.
pub async fn run(socket: ControlSocket, core: Arc<Core>, shutdown: CancellationToken) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let tracker = TaskTracker::new();
    loop {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            break;
        };
        let stream = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = socket.listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "control: accept failed");
                    continue;
                }
            },
        };
        let core = Arc::clone(&core);
        let owner = socket.owner;
        tracker.spawn(async move {
            serve_one(stream, &core, owner).await;
            drop(permit);
        });
    }
    tracker.close();
    tracker.wait().await;
}

/// Checks the peer, reads one request, runs it, answers.
async fn serve_one(mut stream: UnixStream, core: &Arc<Core>, (server_uid, socket_gid): (u32, u32)) {
    let response = match stream.peer_cred() {
        Err(e) => Response::Refused {
            message: format!("the control socket cannot tell who you are: {e}"),
        },
        Ok(cred) => {
            let (uid, gid) = (cred.uid(), cred.gid());
            if protocol::admitted(uid, gid, server_uid, socket_gid, || {
                member_of(uid, socket_gid)
            }) {
                match read_request(&mut stream).await {
                    Ok(request) => run_request(core, request, uid).await,
                    Err(message) => Response::Usage { message },
                }
            } else {
                let group = group_name(socket_gid);
                tracing::warn!(
                    uid,
                    pid = ?cred.pid(),
                    "control: refused a peer that is neither root nor in group {group}"
                );
                Response::Refused {
                    message: format!(
                        "the control socket refuses uid {uid}: run otpgate as root or as a member of group {group}"
                    ),
                }
            }
        }
    };
    let line = protocol::encode_response(&response).unwrap_or_else(|e| {
        protocol::encode_response(&Response::Refused {
            message: format!("the reply cannot be sent: {e}"),
        })
        .unwrap_or_default()
    });
    if let Err(e) = stream.write_all(&line).await {
        tracing::debug!(error = %e, "control: the peer left before the reply");
    }
}

/// Reads one request line, bounded in size and time.
async fn read_request(read: impl AsyncRead + Unpin) -> Result<Request, String> {
    let mut line = Vec::new();
    let limit = u64::try_from(protocol::MAX_REQUEST_LEN + 1).unwrap_or(u64::MAX);
    let mut reader = BufReader::new(read.take(limit));
    match tokio::time::timeout(READ_TIMEOUT, reader.read_until(b'\n', &mut line)).await {
        Err(_) => return Err("no request within 10 s".into()),
        Ok(Err(e)) => return Err(format!("reading the request: {e}")),
        Ok(Ok(_)) => {}
    }
    protocol::decode_request(&line).map_err(|e| format!("bad request: {e}"))
}

/// Runs an admitted request as its operator.
async fn run_request(core: &Arc<Core>, request: Request, uid: u32) -> Response {
    let ctx = RequestContext::new(Door::Cli, operator(uid, request.operator));
    // The command runs on a task of its own: the deadline stops the waiting, never the
    // command halfway (a reset, say, between its account save and its revocations).
    let core = Arc::clone(core);
    let command =
        tokio::spawn(async move { crate::user::execute(&core, request.command, &ctx).await });
    match tokio::time::timeout(COMMAND_TIMEOUT, command).await {
        Err(_) => Response::Refused {
            message: "the command took longer than 60 s; it goes on in the server".into(),
        },
        Ok(Err(e)) => Response::Refused {
            message: format!("the command failed: {e}"),
        },
        Ok(Ok(Ok(reply))) => Response::Done { reply },
        Ok(Ok(Err(Failure::Refused(message)))) => Response::Refused { message },
        Ok(Ok(Err(Failure::Config(message)))) => Response::Usage { message },
    }
}

/// The operator for the audit trail: the name root's CLI gives (who ran `sudo`), or
/// the peer's own account name; the peer's uid beside it.
fn operator(uid: u32, claimed: Option<String>) -> String {
    let account = User::from_uid(Uid::from_raw(uid))
        .ok()
        .flatten()
        .map_or_else(|| format!("uid {uid}"), |u| u.name);
    match claimed {
        Some(name) if uid == 0 && !name.is_empty() && name != account => {
            format!("{name} (as {account})")
        }
        _ => account,
    }
}

/// Whether the account of `uid` is listed as a member of group `gid`.
fn member_of(uid: u32, gid: u32) -> bool {
    let Ok(Some(user)) = User::from_uid(Uid::from_raw(uid)) else {
        return false;
    };
    match Group::from_gid(Gid::from_raw(gid)) {
        Ok(Some(group)) => group.mem.contains(&user.name),
        _ => false,
    }
}

fn group_name(gid: u32) -> String {
    match Group::from_gid(Gid::from_raw(gid)) {
        Ok(Some(group)) => group.name,
        _ => format!("gid {gid}"),
    }
}

/// Asks the server listening on `socket` to run `command`. `Ok(None)` when no server
/// answers there (no socket file, or one left by a server that is gone): the CLI then
/// opens the store itself.
pub async fn call(socket: &Path, command: Command) -> Result<Option<Reply>, Failure> {
    let mut stream = match UnixStream::connect(socket).await {
        Ok(stream) => stream,
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) => {
            return Ok(None);
        }
        Err(e) if e.kind() == ErrorKind::PermissionDenied => {
            let group = std::fs::metadata(socket)
                .map(|m| group_name(m.gid()))
                .unwrap_or_else(|_| "otpgate".into());
            return Err(Failure::Refused(format!(
                "a server runs, but its control socket {} is not yours to use: run otpgate as root or as a member of group {group}",
                socket.display()
            )));
        }
        Err(e) => {
            return Err(Failure::Refused(format!(
                "cannot connect to the control socket {}: {e}",
                socket.display()
            )));
        }
    };
    let request = Request {
        version: protocol::VERSION,
        operator: crate::user::operator_name(),
        command,
    };
    let line = protocol::encode_request(&request)
        .map_err(|e| Failure::Config(format!("control request: {e}")))?;
    let broken = |e: std::io::Error| {
        Failure::Refused(format!("the control socket {}: {e}", socket.display()))
    };
    // A refused peer is answered without being read: the server may have closed
    // before the request is written, and its answer is still there to read.
    let written = stream.write_all(&line).await;
    let mut answer = Vec::new();
    let limit = u64::try_from(protocol::MAX_RESPONSE_LEN + 1).unwrap_or(u64::MAX);
    let read = BufReader::new((&mut stream).take(limit))
        .read_until(b'\n', &mut answer)
        .await;
    if answer.is_empty() {
        written.map_err(broken)?;
        read.map_err(broken)?;
    }
    match protocol::decode_response(&answer) {
        Ok(Response::Done { reply }) => Ok(Some(reply)),
        Ok(Response::Refused { message }) => Err(Failure::Refused(message)),
        Ok(Response::Usage { message }) => Err(Failure::Config(message)),
        Err(e) => Err(Failure::Refused(format!(
            "the server's answer on {}: {e}",
            socket.display()
        ))),
    }
}
