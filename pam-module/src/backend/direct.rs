//! Direct mode: the module runs the core itself against LDAP, Redis and SMTP.
//!
//! The core is async; here it runs on a current-thread tokio runtime created by
//! [`DirectBackend::open`] and dropped with the backend at the end of the call, after
//! the core (and with it every LDAP and Redis connection). No thread or socket
//! outlives the call, which matters inside sshd, which forks around PAM.
//!
//! The embedded store is single-process (the server holds it), so direct mode refuses
//! it: it needs Redis.
//!
//! `remember` uses the core's trusted devices keyed by PAM_RHOST ("pam" door), for
//! `[pam] remember_for`; they are listed and revoked with `otpgate user trusted`, and
//! every decision is audited as door "pam".

use std::sync::Arc;

use otpgate_config::{Config, PasswordVouch, PolicyDoor, StoreConfig};
use otpgate_core::audit::{Door, RequestContext};
use otpgate_core::clock::SystemClock;
use otpgate_core::random::OsRandom;
use otpgate_core::service::{
    Answer, ContinueRequest, CoreConfig, Credential, DeviceId, DoorPolicy, Factor, LoginRequest,
    LoginStep, PendingLogin, PolicyPlace, texts,
};
use otpgate_core::user::UserName;
use otpgate_core::{Core, CoreError, Refusal};
use tokio::runtime::Runtime;
use zeroize::Zeroizing;

use super::{Backend, BackendError, Login, Outcome, Refused};

/// The keyword when the configuration has no `[radius]` section.
const DEFAULT_KEYWORD: &str = "email";

/// A core on its own runtime, for one call.
pub struct DirectBackend {
    /// Dropped first (see `Drop`), inside the runtime.
    core: Option<Arc<Core>>,
    runtime: Runtime,
    keyword: String,
    /// The stack's word for `mode=otp-only` (an earlier module checked the password).
    vouch: PasswordVouch,
    /// The login waiting for a code, kept between `begin` and the answers.
    pending: Option<PendingLogin>,
    /// What a user with no second factor is told (where to set one up).
    enroll_at: String,
}

impl DirectBackend {
    /// Opens the core (directory, Redis, mailer) on a fresh current-thread runtime.
    ///
    /// # Errors
    ///
    /// [`BackendError::Config`] for a configuration the core cannot use (an embedded
    /// store, a missing section); [`BackendError::Unavailable`] when a backend fails.
    pub fn open(config: &Config) -> Result<Self, BackendError> {
        let sections = config
            .require_core()
            .map_err(|e| BackendError::Config(e.to_string()))?;
        if let StoreConfig::Embedded { .. } = sections.store {
            return Err(BackendError::Config(format!(
                "{}: direct mode needs [store] kind = \"redis\" (the embedded store is \
                 single-process)",
                config.path.display()
            )));
        }
        let pam = config
            .pam
            .as_ref()
            .ok_or_else(|| BackendError::Config("no [pam] section".into()))?;
        let mut settings = CoreConfig::from_config(config);
        settings.remember_for = pam.remember_for.as_secs();
        let keyword = config
            .radius
            .as_ref()
            .map_or(DEFAULT_KEYWORD.to_string(), |r| r.email_keyword.clone());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| BackendError::Unavailable(format!("cannot start a runtime: {e}")))?;
        let core = runtime
            .block_on(Core::open(
                config,
                settings,
                Arc::new(SystemClock),
                Arc::new(OsRandom),
            ))
            .map_err(|e| BackendError::Unavailable(e.to_string()))?;
        let enroll_at = texts::enroll_at(core.settings().portal_url.as_deref());
        Ok(Self {
            core: Some(Arc::new(core)),
            runtime,
            keyword,
            vouch: pam.password_vouch("pam"),
            pending: None,
            enroll_at,
        })
    }

    fn core(&self) -> Result<Arc<Core>, BackendError> {
        self.core
            .clone()
            .ok_or_else(|| BackendError::Unavailable("the core is closed".into()))
    }
}

impl Drop for DirectBackend {
    fn drop(&mut self) {
        let core = self.core.take();
        // Connections close inside the runtime; then the runtime itself goes.
        self.runtime.block_on(async move { drop(core) });
    }
}

/// The audit context: door "pam", the remote host as the client.
fn context(login: &Login) -> RequestContext {
    RequestContext::new(
        Door::Pam,
        login.remember_host.as_deref().unwrap_or("pam").to_string(),
    )
}

fn device(login: &Login) -> Option<DeviceId> {
    let host = login.remember_host.as_ref()?;
    Some(DeviceId {
        door: Door::Pam,
        identifier: host.clone(),
        label: format!("{host} (ssh/pam)"),
    })
}

fn refused(r: &Refusal, enroll_at: &str) -> Outcome {
    Outcome::Refused(match r {
        Refusal::UnknownUser => Refused::UnknownUser,
        Refusal::Locked(_) => Refused::Locked,
        Refusal::NotEnrolled => Refused::NotEnrolled {
            message: Some(enroll_at.to_string()),
        },
        other => Refused::Denied(other.to_string()),
    })
}

/// One round of the flow, boxed (its type would otherwise nest too deep for the
/// compiler's query limit).
type RoundFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<LoginStep, CoreError>> + Send>>;

impl DirectBackend {
    /// The flow's step as the module's outcome; a pending login is kept for the next
    /// answer.
    fn map_step(&mut self, step: LoginStep) -> Outcome {
        match step {
            // `nullok` let a user with no second factor through: PAM_IGNORE (or, where
            // the module checked the password itself, the success of that check).
            LoginStep::Accepted(accepted) if accepted.factor() == Factor::NotEnrolled => {
                Outcome::NoSecondFactor
            }
            LoginStep::Accepted(accepted) => Outcome::LetIn {
                how: match accepted.factor() {
                    Factor::TrustedDevice => "trusted host".into(),
                    other => other.method().to_string(),
                },
                notice: accepted.notice().map(str::to_string),
            },
            // Enrollment at the first login: the QR code and the secret, then the prompt;
            // the answer confirms the new app.
            LoginStep::Enroll { pending, shown } => {
                self.pending = Some(pending);
                Outcome::NeedCode {
                    message: Some(shown),
                }
            }
            LoginStep::NeedCode { pending, notice } => {
                self.pending = Some(pending);
                Outcome::NeedCode {
                    message: notice.as_ref().map(texts::delivery),
                }
            }
            LoginStep::Refused(r) => refused(&r, &self.enroll_at),
        }
    }

    /// Runs one round of the flow; a core error is [`BackendError::Unavailable`] (the
    /// flow audited it), a refusal an outcome.
    fn run(&mut self, round: RoundFuture) -> Result<Outcome, BackendError> {
        match self.runtime.block_on(round) {
            Ok(step) => Ok(self.map_step(step)),
            Err(CoreError::Refused(r)) => Ok(refused(&r, &self.enroll_at)),
            Err(e) => Err(BackendError::Unavailable(e.to_string())),
        }
    }
}

impl Backend for DirectBackend {
    fn begin(&mut self, login: &Login) -> Result<Outcome, BackendError> {
        let user = match UserName::parse(&login.user) {
            Ok(u) => u,
            Err(e) => return Ok(refused(&e.into(), &self.enroll_at)),
        };
        let credential = match &login.password {
            Some(p) => Credential::Password(Zeroizing::new(p.to_vec())),
            None => Credential::Vouched(self.vouch.clone()),
        };
        let request = LoginRequest {
            user,
            ctx: context(login),
            credential,
            answer: None,
            device: device(login),
            remember: false,
            policy: DoorPolicy {
                place: Some(PolicyPlace {
                    door: PolicyDoor::Pam,
                    client: None,
                }),
                nullok: login.nullok,
                can_ask: true,
                // A terminal: a rule with `enroll_at_login` shows the QR code here.
                can_enroll: true,
            },
        };
        let core = self.core()?;
        self.pending = None;
        self.run(Box::pin(async move { core.login(request).await }))
    }

    fn answer(&mut self, login: &Login, answer: &[u8]) -> Result<Outcome, BackendError> {
        let pending = self
            .pending
            .take()
            .ok_or_else(|| BackendError::Unavailable("an answer without a login".into()))?;
        let text = Zeroizing::new(String::from_utf8_lossy(answer).into_owned());
        let answer = Answer::parse(&text, &self.keyword)
            .unwrap_or_else(|| Answer::Code(Zeroizing::new(String::new())));
        let request = ContinueRequest {
            pending,
            answer,
            ctx: context(login),
            device: device(login),
            remember: login.remember_host.is_some(),
        };
        let core = self.core()?;
        self.run(Box::pin(async move { core.continue_login(request).await }))
    }
}
