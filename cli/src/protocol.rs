//! The control socket's protocol, without sockets: one request line, one response
//! line, each a JSON object.
//!
//! ```text
//! → {"version":1,"operator":"alice","command":{"command":"user-unlock","user":"bob"}}
//! ← {"status":"done","reply":{"json":[{"user":"bob","locked":false}],"text":"bob: unlocked"}}
//! ← {"status":"refused","message":"bob: unknown user"}
//! ```
//!
//! A request names one admin or helpdesk command ([`Command`]); the server runs it with
//! the same core calls as the CLI does on its own ([`crate::user::execute`]) and sends
//! back what the CLI prints: the JSON values for `--json` and the text otherwise.

use serde::{Deserialize, Serialize};

/// The protocol's version; a request of another version is refused.
pub const VERSION: u32 = 1;
/// The longest request line accepted (without its newline).
/// (An import carries its file's entries: a 4 MiB file fits, base32 included.)
pub const MAX_REQUEST_LEN: usize = 8 * 1024 * 1024;
/// The longest response line accepted (an audit listing can be long).
pub const MAX_RESPONSE_LEN: usize = 64 * 1024 * 1024;

/// One admin or helpdesk command, as the command line names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Command {
    /// `otpgate user status USER`
    UserStatus { user: String },
    /// `otpgate user enroll USER` (the QR file, if any, is written by the CLI)
    UserEnroll { user: String },
    /// `otpgate user confirm USER CODE`
    UserConfirm { user: String, code: String },
    /// `otpgate user reset USER`
    UserReset { user: String },
    /// `otpgate user email set USER ADDRESS`
    EmailSet { user: String, address: String },
    /// `otpgate user email confirm USER CODE`
    EmailConfirm { user: String, code: String },
    /// `otpgate user unlock USER`
    UserUnlock { user: String },
    /// `otpgate user trusted list USER`
    TrustedList { user: String },
    /// `otpgate user trusted revoke USER [ID]`
    TrustedRevoke { user: String, id: Option<String> },
    /// `otpgate user import FILE …`: the entries the CLI read from the file
    UserImport {
        format: otpgate_core::import::Format,
        parsed: otpgate_core::import::Parsed,
        user: Option<String>,
        dry_run: bool,
    },
    /// `otpgate token list [USER]`
    TokenList { user: Option<String> },
    /// `otpgate token assign SERIAL USER`
    TokenAssign { serial: String, user: String },
    /// `otpgate token remove USER NAME|SERIAL`
    TokenRemove { user: String, token: String },
    /// `otpgate token unassign SERIAL`
    TokenUnassign { serial: String },
    /// `otpgate helpdesk list`
    HelpdeskList,
    /// `otpgate helpdesk issue USER`
    HelpdeskIssue { user: String },
    /// `otpgate audit [--user USER] [--since DURATION] [--limit N]`
    Audit {
        user: Option<String>,
        since: String,
        limit: usize,
    },
}

/// A request: the command and who asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// [`VERSION`].
    pub version: u32,
    /// The operator's name as the CLI knows it (`SUDO_USER`, else `USER`). The server
    /// believes it only from root; any other peer is recorded by its account name.
    pub operator: Option<String>,
    pub command: Command,
}

/// What a command printed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Reply {
    /// For `--json`: each value is printed as one line.
    pub json: Vec<serde_json::Value>,
    /// Otherwise this text is printed (one newline added).
    pub text: String,
    /// For `user enroll --qr FILE`: the URI the CLI draws into the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otpauth_uri: Option<String>,
    /// Set when the command did part of its work and refused the rest (an import with
    /// refused entries): the reply is printed, then this reason, and the CLI exits 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

impl Reply {
    /// A reply of one JSON value and its text.
    pub fn one(json: serde_json::Value, text: String) -> Self {
        Self {
            json: vec![json],
            text,
            otpauth_uri: None,
            refused: None,
        }
    }
}

/// The server's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Response {
    /// The command ran: print the reply, exit 0.
    Done { reply: Reply },
    /// The command was refused (or a backend could not answer): exit 1.
    Refused { message: String },
    /// A usage or configuration error: exit 2.
    Usage { message: String },
}

/// Why a line is not a valid request or response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The line is longer than allowed; the peer is misbehaving or not otpgate.
    #[error("the line exceeds {max} bytes")]
    TooLong {
        /// The limit.
        max: usize,
    },
    /// The line is not the expected JSON object; the message says where.
    #[error("malformed: {0}")]
    Malformed(String),
    /// The request is of another protocol version: run the same otpgate version on
    /// both sides.
    #[error("protocol version {0} is not {VERSION}; is the CLI the server's version?")]
    Version(u32),
}

/// One request as a line (with its newline).
pub fn encode_request(request: &Request) -> Result<Vec<u8>, ProtocolError> {
    encode(request, MAX_REQUEST_LEN)
}

/// One response as a line (with its newline).
pub fn encode_response(response: &Response) -> Result<Vec<u8>, ProtocolError> {
    encode(response, MAX_RESPONSE_LEN)
}

fn encode<T: Serialize>(value: &T, max: usize) -> Result<Vec<u8>, ProtocolError> {
    let mut line =
        serde_json::to_vec(value).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    if line.len() > max {
        return Err(ProtocolError::TooLong { max });
    }
    line.push(b'\n');
    Ok(line)
}

/// Parses a request line (its newline may be there or not).
pub fn decode_request(line: &[u8]) -> Result<Request, ProtocolError> {
    let request: Request = decode(line, MAX_REQUEST_LEN)?;
    if request.version != VERSION {
        return Err(ProtocolError::Version(request.version));
    }
    Ok(request)
}

/// Parses a response line (its newline may be there or not).
pub fn decode_response(line: &[u8]) -> Result<Response, ProtocolError> {
    decode(line, MAX_RESPONSE_LEN)
}

fn decode<T: for<'de> Deserialize<'de>>(line: &[u8], max: usize) -> Result<T, ProtocolError> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    if line.len() > max {
        return Err(ProtocolError::TooLong { max });
    }
    serde_json::from_slice(line).map_err(|e| ProtocolError::Malformed(e.to_string()))
}

/// Who may use the control socket: root, the server's own user, or a member of the
/// socket's group (as its primary group, or listed in the group database).
/// `member_of_socket_group` looks the latter up; it is asked only when the cheaper
/// checks fail.
pub fn admitted(
    peer_uid: u32,
    peer_gid: u32,
    server_uid: u32,
    socket_gid: u32,
    member_of_socket_group: impl FnOnce() -> bool,
) -> bool {
    peer_uid == 0 || peer_uid == server_uid || peer_gid == socket_gid || member_of_socket_group()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(command: Command) -> Request {
        Request {
            version: VERSION,
            operator: Some("alice".into()),
            command,
        }
    }

    #[test]
    fn every_command_round_trips() {
        let commands = [
            Command::UserStatus { user: "bob".into() },
            Command::UserEnroll { user: "bob".into() },
            Command::UserConfirm {
                user: "bob".into(),
                code: "123456".into(),
            },
            Command::UserReset { user: "bob".into() },
            Command::EmailSet {
                user: "bob".into(),
                address: "bob@example.org".into(),
            },
            Command::EmailConfirm {
                user: "bob".into(),
                code: "12345678".into(),
            },
            Command::UserUnlock { user: "bob".into() },
            Command::TrustedList { user: "bob".into() },
            Command::TrustedRevoke {
                user: "bob".into(),
                id: Some("x1".into()),
            },
            Command::TrustedRevoke {
                user: "bob".into(),
                id: None,
            },
            Command::UserImport {
                format: otpgate_core::import::Format::Otpauth,
                parsed: otpgate_core::import::otpauth::parse(
                    "otpauth://totp/VPN:bob?secret=JBSWY3DPEHPK3PXP&digits=8\nnot a uri\n",
                ),
                user: None,
                dry_run: true,
            },
            Command::TokenList { user: None },
            Command::TokenList {
                user: Some("bob".into()),
            },
            Command::TokenAssign {
                serial: "123".into(),
                user: "bob".into(),
            },
            Command::TokenRemove {
                user: "bob".into(),
                token: "app".into(),
            },
            Command::TokenUnassign {
                serial: "123".into(),
            },
            Command::HelpdeskList,
            Command::HelpdeskIssue { user: "bob".into() },
            Command::Audit {
                user: None,
                since: "1h".into(),
                limit: 10,
            },
        ];
        for command in commands {
            let line = encode_request(&request(command.clone())).unwrap();
            assert_eq!(line.last(), Some(&b'\n'));
            assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1, "one line");
            assert_eq!(decode_request(&line).unwrap(), request(command));
        }
    }

    #[test]
    fn the_wire_form_is_stable() {
        let line = encode_request(&request(Command::UserUnlock { user: "bob".into() })).unwrap();
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "{\"version\":1,\"operator\":\"alice\",\"command\":{\"command\":\"user-unlock\",\"user\":\"bob\"}}\n"
        );
        let done = Response::Done {
            reply: Reply::one(serde_json::json!({"user": "bob"}), "bob: unlocked".into()),
        };
        let line = encode_response(&done).unwrap();
        assert_eq!(
            String::from_utf8(line.clone()).unwrap(),
            "{\"status\":\"done\",\"reply\":{\"json\":[{\"user\":\"bob\"}],\"text\":\"bob: unlocked\"}}\n"
        );
        assert_eq!(decode_response(&line).unwrap(), done);
        let refused = Response::Refused {
            message: "no".into(),
        };
        assert_eq!(
            decode_response(&encode_response(&refused).unwrap()).unwrap(),
            refused
        );
    }

    #[test]
    fn bad_requests_are_precise_errors() {
        let cases: &[&[u8]] = &[
            b"",
            b"null",
            b"{}",
            b"not json",
            b"{\"version\":1,\"operator\":null,\"command\":{\"command\":\"format-disk\"}}",
            b"{\"version\":1,\"operator\":null,\"command\":{\"command\":\"user-unlock\"}}",
            b"{\"version\":1,\"operator\":null,\"command\":{\"command\":\"user-unlock\",\"user\":\"b\",\"as\":\"root\"}}",
            b"{\"version\":1,\"operator\":null,\"command\":{\"command\":\"helpdesk-list\"},\"extra\":1}",
            b"{\"version\":1,\"operator\":null,\"command\":{\"command\":\"audit\",\"since\":\"1h\",\"limit\":-1}}",
        ];
        for case in cases {
            assert!(
                matches!(decode_request(case), Err(ProtocolError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(case)
            );
        }
        assert_eq!(
            decode_request(
                b"{\"version\":2,\"operator\":null,\"command\":{\"command\":\"helpdesk-list\"}}"
            ),
            Err(ProtocolError::Version(2))
        );
        let long = vec![b' '; MAX_REQUEST_LEN + 1];
        assert_eq!(
            decode_request(&long),
            Err(ProtocolError::TooLong {
                max: MAX_REQUEST_LEN
            })
        );
    }

    #[test]
    fn root_the_server_user_and_the_socket_group_are_admitted() {
        let never = || panic!("no group look-up needed");
        assert!(admitted(0, 0, 999, 999, never));
        assert!(admitted(999, 999, 999, 999, never));
        assert!(admitted(1000, 999, 998, 999, never));
        assert!(admitted(1000, 1000, 998, 999, || true));
        assert!(!admitted(1000, 1000, 998, 999, || false));
        assert!(!admitted(65534, 65534, 0, 0, || false));
    }
}
