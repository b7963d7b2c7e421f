//! The login logic against a scripted conversation and a scripted backend. Each fake
//! checks, when dropped, that every step it expected happened, in order.

use std::collections::VecDeque;

use super::*;
use crate::handle::HandleError;

/// One expected exchange with the application.
#[derive(Debug)]
enum Conv {
    /// A hidden prompt with this text, answered with this reply.
    Prompt(&'static str, &'static str),
    /// A hidden prompt with this text that the application refuses.
    PromptFails(&'static str),
    /// An information line containing this text.
    Info(&'static str),
}

struct FakeHandle {
    user: &'static [u8],
    rhost: Option<&'static [u8]>,
    authtok: Option<&'static str>,
    script: VecDeque<Conv>,
    stored_authtok: Option<Vec<u8>>,
    logs: Vec<(Level, String)>,
}

impl FakeHandle {
    fn new(script: Vec<Conv>) -> Self {
        Self {
            user: b"alice",
            rhost: None,
            authtok: None,
            script: script.into(),
            stored_authtok: None,
            logs: Vec::new(),
        }
    }

    fn logged(&self, needle: &str) -> bool {
        self.logs.iter().any(|(_, l)| l.contains(needle))
    }
}

impl Drop for FakeHandle {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            assert!(
                self.script.is_empty(),
                "conversation steps never happened: {:?}",
                self.script
            );
        }
    }
}

impl PamHandle for FakeHandle {
    fn user(&mut self) -> Result<Zeroizing<Vec<u8>>, HandleError> {
        Ok(Zeroizing::new(self.user.to_vec()))
    }
    fn rhost(&mut self) -> Result<Option<Vec<u8>>, HandleError> {
        Ok(self.rhost.map(<[u8]>::to_vec))
    }
    fn authtok(&mut self) -> Result<Option<Zeroizing<Vec<u8>>>, HandleError> {
        Ok(self.authtok.map(|t| Zeroizing::new(t.as_bytes().to_vec())))
    }
    fn set_authtok(&mut self, token: &[u8]) -> Result<(), HandleError> {
        self.stored_authtok = Some(token.to_vec());
        Ok(())
    }
    fn prompt_hidden(&mut self, prompt: &str) -> Result<Zeroizing<Vec<u8>>, HandleError> {
        match self.script.pop_front() {
            Some(Conv::Prompt(p, reply)) => {
                assert_eq!(prompt, p, "unexpected prompt");
                Ok(Zeroizing::new(reply.as_bytes().to_vec()))
            }
            Some(Conv::PromptFails(p)) => {
                assert_eq!(prompt, p, "unexpected prompt");
                Err(HandleError::Conversation("hung up".into()))
            }
            other => panic!("prompt {prompt:?} but the script expected {other:?}"),
        }
    }
    fn info(&mut self, text: &str) -> Result<(), HandleError> {
        match self.script.pop_front() {
            Some(Conv::Info(needle)) => {
                assert!(text.contains(needle), "info {text:?} lacks {needle:?}");
                Ok(())
            }
            other => panic!("info {text:?} but the script expected {other:?}"),
        }
    }
    fn log(&mut self, level: Level, message: &str) {
        self.logs.push((level, message.to_string()));
    }
}

/// One expected call on the backend.
#[derive(Debug)]
enum Call {
    /// `begin` with this password and remembered host.
    Begin(
        Option<&'static str>,
        Option<&'static str>,
        Result<Outcome, BackendError>,
    ),
    /// `answer` with this text.
    Answer(&'static str, Result<Outcome, BackendError>),
}

struct FakeBackend {
    script: VecDeque<Call>,
}

impl Drop for FakeBackend {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            assert!(
                self.script.is_empty(),
                "backend calls never happened: {:?}",
                self.script
            );
        }
    }
}

impl Backend for FakeBackend {
    fn begin(&mut self, login: &Login) -> Result<Outcome, BackendError> {
        match self.script.pop_front() {
            Some(Call::Begin(password, host, then)) => {
                assert_eq!(
                    login.password.as_ref().map(|p| p.to_vec()),
                    password.map(|p| p.as_bytes().to_vec())
                );
                assert_eq!(login.remember_host.as_deref(), host);
                then
            }
            other => panic!("begin but the script expected {other:?}"),
        }
    }
    fn answer(&mut self, _login: &Login, answer: &[u8]) -> Result<Outcome, BackendError> {
        match self.script.pop_front() {
            Some(Call::Answer(expected, then)) => {
                assert_eq!(answer, expected.as_bytes());
                then
            }
            other => panic!("answer {answer:?} but the script expected {other:?}"),
        }
    }
}

fn need_code() -> Result<Outcome, BackendError> {
    Ok(Outcome::NeedCode { message: None })
}

fn accepted() -> Result<Outcome, BackendError> {
    Ok(Outcome::LetIn {
        how: "totp".into(),
        notice: None,
    })
}

fn denied() -> Result<Outcome, BackendError> {
    Ok(Outcome::Refused(Refused::Denied("wrong code".into())))
}

fn unavailable() -> Result<Outcome, BackendError> {
    Err(BackendError::Unavailable(
        "no RADIUS server answered".into(),
    ))
}

/// A login the backend settles at `begin` (no prompt).
fn settled_at_begin(
    handle: &mut FakeHandle,
    args: &[&str],
    then: Result<Outcome, BackendError>,
) -> PamCode {
    run(handle, args, vec![Call::Begin(None, None, then)])
}

fn run(handle: &mut FakeHandle, args: &[&str], calls: Vec<Call>) -> PamCode {
    let backend = FakeBackend {
        script: calls.into(),
    };
    authenticate(handle, args, move |_| Ok(Box::new(backend)))
}

#[test]
fn otp_only_prompts_once_and_accepts() {
    let mut h = FakeHandle::new(vec![Conv::Prompt(OTP_PROMPT, "123456")]);
    let code = run(
        &mut h,
        &[],
        vec![
            Call::Begin(None, None, need_code()),
            Call::Answer("123456", accepted()),
        ],
    );
    assert_eq!(code, PamCode::Success);
    assert!(h.logged("accepted user alice (totp)"));
}

#[test]
fn a_wrong_code_is_auth_err() {
    let mut h = FakeHandle::new(vec![Conv::Prompt(OTP_PROMPT, "000000")]);
    let code = run(
        &mut h,
        &[],
        vec![
            Call::Begin(None, None, need_code()),
            Call::Answer("000000", denied()),
        ],
    );
    assert_eq!(code, PamCode::AuthErr);
}

#[test]
fn password_mode_prompts_for_the_password_and_keeps_it_for_later_modules() {
    let mut h = FakeHandle::new(vec![
        Conv::Prompt(PASSWORD_PROMPT, "alice-pw"),
        Conv::Prompt(OTP_PROMPT, "123456"),
    ]);
    let code = run(
        &mut h,
        &["mode=password+otp"],
        vec![
            Call::Begin(Some("alice-pw"), None, need_code()),
            Call::Answer("123456", accepted()),
        ],
    );
    assert_eq!(code, PamCode::Success);
    assert_eq!(h.stored_authtok.as_deref(), Some(&b"alice-pw"[..]));
}

#[test]
fn use_first_pass_takes_the_earlier_password_or_fails() {
    let mut h = FakeHandle::new(vec![Conv::Prompt(OTP_PROMPT, "123456")]);
    h.authtok = Some("earlier-pw");
    let code = run(
        &mut h,
        &["mode=password+otp", "use_first_pass"],
        vec![
            Call::Begin(Some("earlier-pw"), None, need_code()),
            Call::Answer("123456", accepted()),
        ],
    );
    assert_eq!(code, PamCode::Success);

    let mut h = FakeHandle::new(vec![]);
    let code = run(&mut h, &["mode=password+otp", "use_first_pass"], vec![]);
    assert_eq!(code, PamCode::AuthErr);
    assert!(h.logged("no earlier password"));
}

#[test]
fn try_first_pass_prompts_only_without_an_earlier_password() {
    let mut h = FakeHandle::new(vec![Conv::Prompt(PASSWORD_PROMPT, "typed-pw")]);
    let code = run(
        &mut h,
        &["mode=password+otp", "try_first_pass"],
        vec![Call::Begin(
            Some("typed-pw"),
            None,
            Ok(Outcome::LetIn {
                how: "trusted-device".into(),
                notice: None,
            }),
        )],
    );
    assert_eq!(code, PamCode::Success);

    let mut h = FakeHandle::new(vec![]);
    h.authtok = Some("earlier-pw");
    let code = run(
        &mut h,
        &["mode=password+otp", "try_first_pass"],
        vec![Call::Begin(
            Some("earlier-pw"),
            None,
            Ok(Outcome::Refused(Refused::Denied("wrong password".into()))),
        )],
    );
    assert_eq!(code, PamCode::AuthErr);
}

#[test]
fn the_email_keyword_round_shows_the_message_and_prompts_again() {
    let mut h = FakeHandle::new(vec![
        Conv::Prompt(OTP_PROMPT, "email"),
        Conv::Info("mailed to a***@example.org"),
        Conv::Prompt(OTP_PROMPT, "12345678"),
    ]);
    let code = run(
        &mut h,
        &[],
        vec![
            Call::Begin(None, None, need_code()),
            Call::Answer(
                "email",
                Ok(Outcome::NeedCode {
                    message: Some("A one-time password was mailed to a***@example.org.".into()),
                }),
            ),
            Call::Answer("12345678", accepted()),
        ],
    );
    assert_eq!(code, PamCode::Success);
}

#[test]
fn prompts_are_bounded() {
    let mut h = FakeHandle::new(vec![
        Conv::Prompt(OTP_PROMPT, "email"),
        Conv::Prompt(OTP_PROMPT, "email"),
        Conv::Prompt(OTP_PROMPT, "email"),
    ]);
    let again = || Ok(Outcome::NeedCode { message: None });
    let code = run(
        &mut h,
        &[],
        vec![
            Call::Begin(None, None, need_code()),
            Call::Answer("email", again()),
            Call::Answer("email", again()),
            Call::Answer("email", again()),
        ],
    );
    assert_eq!(code, PamCode::AuthErr);
}

#[test]
fn refusals_map_to_their_codes() {
    for (refused, expected) in [
        (Refused::UnknownUser, PamCode::UserUnknown),
        (Refused::Locked, PamCode::MaxTries),
        (Refused::NotEnrolled { message: None }, PamCode::AuthErr),
        (Refused::Denied("replay".into()), PamCode::AuthErr),
    ] {
        let mut h = FakeHandle::new(vec![]);
        let code = run(
            &mut h,
            &[],
            vec![Call::Begin(None, None, Ok(Outcome::Refused(refused)))],
        );
        assert_eq!(code, expected);
    }
}

#[test]
fn ignore_unknown_user_passes_only_unknown_users_on() {
    let args = ["ignore_unknown_user"];
    // Unknown to the directory (root, a local account): PAM_IGNORE, never asked.
    let mut h = FakeHandle::new(vec![]);
    h.user = b"root";
    let unknown = Ok(Outcome::Refused(Refused::UnknownUser));
    assert_eq!(settled_at_begin(&mut h, &args, unknown), PamCode::Ignore);
    assert!(h.logged("ignored user root"));
    // Every other refusal keeps its code; a backend that cannot say whether the user
    // exists is no reason to pass them on.
    for (then, expected) in [
        (Ok(Outcome::Refused(Refused::Locked)), PamCode::MaxTries),
        (
            Ok(Outcome::Refused(Refused::NotEnrolled { message: None })),
            PamCode::AuthErr,
        ),
        (unavailable(), PamCode::AuthInfoUnavail),
    ] {
        let mut h = FakeHandle::new(vec![]);
        assert_eq!(settled_at_begin(&mut h, &args, then), expected);
    }
    // A known user is still asked.
    let mut h = FakeHandle::new(vec![Conv::Prompt(OTP_PROMPT, "000000")]);
    let calls = vec![
        Call::Begin(None, None, need_code()),
        Call::Answer("000000", denied()),
    ];
    assert_eq!(run(&mut h, &args, calls), PamCode::AuthErr);
}

#[test]
fn nullok_without_a_second_factor_is_ignore_in_otp_only_and_success_with_the_password() {
    let mut h = FakeHandle::new(vec![]);
    let none = Ok(Outcome::NoSecondFactor);
    assert_eq!(settled_at_begin(&mut h, &["nullok"], none), PamCode::Ignore);
    assert!(h.logged("no second factor (nullok)"));

    let mut h = FakeHandle::new(vec![Conv::Prompt(PASSWORD_PROMPT, "pw")]);
    let code = run(
        &mut h,
        &["mode=password+otp", "nullok"],
        vec![Call::Begin(Some("pw"), None, Ok(Outcome::NoSecondFactor))],
    );
    assert_eq!(code, PamCode::Success);
}

#[test]
fn a_backend_failure_is_authinfo_unavail_never_success() {
    let mut h = FakeHandle::new(vec![Conv::Prompt(OTP_PROMPT, "123456")]);
    let code = run(
        &mut h,
        &[],
        vec![
            Call::Begin(None, None, need_code()),
            Call::Answer("123456", unavailable()),
        ],
    );
    assert_eq!(code, PamCode::AuthInfoUnavail);
    assert!(h.logged("no RADIUS server answered"));

    let mut h = FakeHandle::new(vec![]);
    let code = authenticate(&mut h, &[], |_| {
        Err(BackendError::Config(
            "/etc/otpgate/otpgate.toml is not owned by root".into(),
        ))
    });
    assert_eq!(code, PamCode::AuthInfoUnavail);
}

#[test]
fn a_bad_argument_is_service_err_and_the_backend_is_never_opened() {
    let mut h = FakeHandle::new(vec![]);
    let code = authenticate(&mut h, &["nullokk"], |_| panic!("opened"));
    assert_eq!(code, PamCode::ServiceErr);
    assert!(h.logged("unknown argument `nullokk`"));
}

#[test]
fn bad_user_names_and_tokens_are_refused_before_the_backend() {
    for user in [
        &b"al ice"[..],
        b"al\0ice",
        b"",
        &[b'a'; 129][..],
        b"\xff\xfe",
    ] {
        let mut h = FakeHandle::new(vec![]);
        h.user = user;
        assert_eq!(
            authenticate(&mut h, &[], |_| panic!("opened")),
            PamCode::UserUnknown
        );
    }
    for token in ["12\u{0}456", "", "12\u{1b}456"] {
        let mut h = FakeHandle::new(vec![Conv::Prompt(OTP_PROMPT, token)]);
        let code = run(&mut h, &[], vec![Call::Begin(None, None, need_code())]);
        assert_eq!(code, PamCode::AuthErr, "{token:?}");
    }
    let long: &'static str = "1".repeat(129).leak();
    let mut h = FakeHandle::new(vec![Conv::Prompt(OTP_PROMPT, long)]);
    let code = run(&mut h, &[], vec![Call::Begin(None, None, need_code())]);
    assert_eq!(code, PamCode::AuthErr);
}

#[test]
fn remember_passes_a_plausible_remote_host_only() {
    let mut h = FakeHandle::new(vec![]);
    h.rhost = Some(b"192.0.2.7");
    let trusted = || {
        Ok(Outcome::LetIn {
            how: "trusted-device".into(),
            notice: None,
        })
    };
    let code = run(
        &mut h,
        &["remember"],
        vec![Call::Begin(None, Some("192.0.2.7"), trusted())],
    );
    assert_eq!(code, PamCode::Success);

    let mut h = FakeHandle::new(vec![]);
    h.rhost = Some(b"host\nname");
    let code = run(
        &mut h,
        &["remember"],
        vec![Call::Begin(None, None, trusted())],
    );
    assert_eq!(code, PamCode::Success);
    assert!(h.logged("not remembered"));

    // Without `remember` the host is not even read.
    let mut h = FakeHandle::new(vec![]);
    h.rhost = Some(b"192.0.2.7");
    let code = run(&mut h, &[], vec![Call::Begin(None, None, trusted())]);
    assert_eq!(code, PamCode::Success);
}

#[test]
fn a_failed_conversation_is_conv_err() {
    let mut h = FakeHandle::new(vec![Conv::PromptFails(OTP_PROMPT)]);
    let code = run(&mut h, &[], vec![Call::Begin(None, None, need_code())]);
    assert_eq!(code, PamCode::ConvErr);
}

#[test]
fn server_text_is_made_printable() {
    assert_eq!(printable("a\u{1b}[2Jb\nc"), "a[2Jb\nc");
    // Bounded, with room for an enrollment's QR code and secret.
    assert_eq!(printable(&"x".repeat(9000)).len(), MAX_SHOWN);
}

#[test]
fn a_user_without_a_factor_is_told_where_to_enroll_and_refused() {
    let mut h = FakeHandle::new(vec![Conv::Info("set it up at https://p")]);
    let code = run(
        &mut h,
        &[],
        vec![Call::Begin(
            None,
            None,
            Ok(Outcome::Refused(Refused::NotEnrolled {
                message: Some("A second factor is required: set it up at https://p".into()),
            })),
        )],
    );
    assert_eq!(code, PamCode::AuthErr);
    assert!(h.script.is_empty(), "the message was not shown");
}

#[test]
fn a_notice_is_shown_before_letting_in() {
    let mut h = FakeHandle::new(vec![Conv::Info("before 2999-01-01")]);
    let code = run(
        &mut h,
        &[],
        vec![Call::Begin(
            None,
            None,
            Ok(Outcome::LetIn {
                how: "before-deadline".into(),
                notice: Some("Set up your second factor at https://p before 2999-01-01.".into()),
            }),
        )],
    );
    assert_eq!(code, PamCode::Success);
}

#[test]
fn an_enrollment_longer_than_one_message_is_shown_in_parts_then_prompted() {
    // A QR code's worth of lines: 30 lines of 150 bytes, then the secret.
    let qr_line = "▀▄█ ".repeat(15);
    let mut text = String::from("A second factor is required.\n");
    for _ in 0..30 {
        text.push_str(&qr_line);
        text.push('\n');
    }
    text.push_str("Secret: ABCDEFGH\n");
    let parts = info_messages(&printable(&text));
    assert!(parts.len() > 1, "{}", parts.len());
    assert!(parts.iter().all(|p| p.len() <= MAX_INFO));
    assert_eq!(parts.join("\n"), text.trim_end());
    let mut script: Vec<Conv> = parts.iter().map(|_| Conv::Info("")).collect();
    script.push(Conv::Prompt(OTP_PROMPT, "123456"));
    let mut h = FakeHandle::new(script);
    let code = run(
        &mut h,
        &[],
        vec![
            Call::Begin(
                None,
                None,
                Ok(Outcome::NeedCode {
                    message: Some(text.clone()),
                }),
            ),
            Call::Answer("123456", accepted()),
        ],
    );
    assert_eq!(code, PamCode::Success);
    // A single line longer than a message is split at a character boundary.
    let long = "█".repeat(400);
    let parts = info_messages(&long);
    assert_eq!(parts.concat(), long);
    assert!(parts.iter().all(|p| p.len() <= MAX_INFO));
}
