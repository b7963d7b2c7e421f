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

use otpgate_config::{Config, StoreConfig};
use otpgate_core::audit::{Door, RequestContext};
use otpgate_core::clock::SystemClock;
use otpgate_core::directory::PasswordCheck;
use otpgate_core::random::OsRandom;
use otpgate_core::service::{
    ClientVouched, CodeCheck, CodeDelivery, DeviceId, FactorProof, PasswordProof,
};
use otpgate_core::user::UserName;
use otpgate_core::{Core, CoreError, Refusal};
use tokio::runtime::Runtime;

use super::{Backend, BackendError, Login, Outcome, Refused};

/// The keyword when the configuration has no `[radius]` section.
const DEFAULT_KEYWORD: &str = "email";

/// A core on its own runtime, for one call.
pub struct DirectBackend {
    /// Dropped first (see `Drop`), inside the runtime.
    core: Option<Core>,
    runtime: Runtime,
    keyword: String,
    /// The password side, kept between `begin` and the code.
    password: Option<PasswordProof>,
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
        let mut config = config.clone();
        if let Some(pam) = &config.pam {
            config.trust.remember_for = pam.remember_for;
        }
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
                &config,
                Arc::new(SystemClock),
                Arc::new(OsRandom),
            ))
            .map_err(|e| BackendError::Unavailable(e.to_string()))?;
        Ok(Self {
            core: Some(core),
            runtime,
            keyword,
            password: None,
        })
    }

    fn core(&self) -> Result<&Core, BackendError> {
        self.core
            .as_ref()
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
        door: "pam".into(),
        identifier: host.clone(),
        label: format!("{host} (ssh/pam)"),
    })
}

fn refused(r: &Refusal) -> Outcome {
    Outcome::Refused(match r {
        Refusal::UnknownUser => Refused::UnknownUser,
        Refusal::Locked(_) => Refused::Locked,
        Refusal::NotEnrolled => Refused::NotEnrolled,
        other => Refused::Denied(other.to_string()),
    })
}

impl DirectBackend {
    async fn begin_async(
        core: &Core,
        login: &Login,
        ctx: &RequestContext,
    ) -> Result<(Outcome, Option<PasswordProof>), CoreError> {
        let user = UserName::parse(&login.user)?;
        let proof = match &login.password {
            Some(password) => match core.verify_password(&user, password).await? {
                PasswordCheck::Verified(p) => PasswordProof::Verified(p),
                PasswordCheck::Refused(r) => {
                    core.reject(user.as_str(), ctx, "password", &r).await;
                    return Ok((refused(&r), None));
                }
            },
            None => {
                // An earlier module checked the password, not the directory entry.
                let refusal = match core.lookup(&user).await? {
                    None => Some(Refusal::UnknownUser),
                    Some(entry) if !entry.activated => Some(Refusal::NotActivated),
                    Some(_) => None,
                };
                if let Some(r) = refusal {
                    core.reject(user.as_str(), ctx, "password-by-client", &r)
                        .await;
                    return Ok((refused(&r), None));
                }
                PasswordProof::CheckedByClient(ClientVouched::new(user.clone(), "pam"))
            }
        };
        let status = core.factor_status(&user).await?;
        if let Some(until) = status.locked_until {
            let r = Refusal::Locked(until);
            core.reject(user.as_str(), ctx, "password", &r).await;
            return Ok((refused(&r), None));
        }
        if let Some(device) = device(login) {
            if let Some(trusted) = core.check_trusted(&user, &device).await? {
                core.accept(proof, FactorProof::Trusted(trusted), ctx, None)
                    .await?;
                return Ok((
                    Outcome::Accepted {
                        how: "trusted host".into(),
                    },
                    None,
                ));
            }
        }
        if !status.has_totp && !status.has_address {
            if let (true, Some(not_enrolled)) = (login.nullok, status.not_enrolled()) {
                core.accept(proof, FactorProof::NotEnrolled(not_enrolled), ctx, None)
                    .await?;
                return Ok((Outcome::NoSecondFactor, None));
            }
            let r = Refusal::NotEnrolled;
            core.reject(user.as_str(), ctx, "password", &r).await;
            return Ok((refused(&r), None));
        }
        Ok((Outcome::NeedCode { message: None }, Some(proof)))
    }

    async fn answer_async(
        core: &Core,
        keyword: &str,
        login: &Login,
        ctx: &RequestContext,
        proof: PasswordProof,
        answer: &str,
    ) -> Result<(Outcome, Option<PasswordProof>), CoreError> {
        let user = UserName::parse(&login.user)?;
        if answer.trim().eq_ignore_ascii_case(keyword) {
            let message = match core.request_login_code(&user, ctx).await {
                Ok(CodeDelivery::Mailed { masked_address }) => {
                    format!("A one-time password was mailed to {masked_address}.")
                }
                Ok(CodeDelivery::QueuedForHelpdesk) => "No notification address is \
                     registered: your request was sent to the helpdesk."
                    .to_string(),
                Err(CoreError::Refused(r)) => return Ok((refused(&r), None)),
                Err(e) => return Err(e),
            };
            return Ok((
                Outcome::NeedCode {
                    message: Some(message),
                },
                Some(proof),
            ));
        }
        match core.verify_code(&user, answer).await? {
            CodeCheck::Verified(otp) => {
                let remember = device(login);
                let accepted = core
                    .accept(proof, FactorProof::Otp(otp), ctx, remember.as_ref())
                    .await?;
                Ok((
                    Outcome::Accepted {
                        how: accepted.method.to_string(),
                    },
                    None,
                ))
            }
            CodeCheck::Refused(r) => {
                core.reject(user.as_str(), ctx, "code", &r).await;
                Ok((refused(&r), None))
            }
        }
    }

    /// Runs one step; a core error becomes [`BackendError::Unavailable`] (audited), a
    /// refusal an outcome.
    fn step<F>(&mut self, login: &Login, f: F) -> Result<Outcome, BackendError>
    where
        F: AsyncFnOnce(
            &Core,
            &RequestContext,
        ) -> Result<(Outcome, Option<PasswordProof>), CoreError>,
    {
        let ctx = context(login);
        let core = self.core()?;
        let result = self.runtime.block_on(async {
            match f(core, &ctx).await {
                Ok(done) => Ok(done),
                Err(CoreError::Refused(r)) => Ok((refused(&r), None)),
                Err(e) => {
                    core.audit(&ctx, &login.user, "pam", "error", &e.to_string())
                        .await;
                    Err(BackendError::Unavailable(e.to_string()))
                }
            }
        });
        let (outcome, proof) = result?;
        self.password = proof;
        Ok(outcome)
    }
}

impl Backend for DirectBackend {
    fn begin(&mut self, login: &Login) -> Result<Outcome, BackendError> {
        self.step(login, async |core, ctx| {
            Self::begin_async(core, login, ctx).await
        })
    }

    fn answer(&mut self, login: &Login, answer: &[u8]) -> Result<Outcome, BackendError> {
        let proof = self
            .password
            .take()
            .ok_or_else(|| BackendError::Unavailable("an answer without a login".into()))?;
        let answer = zeroize::Zeroizing::new(String::from_utf8_lossy(answer).into_owned());
        let keyword = self.keyword.clone();
        self.step(login, async move |core, ctx| {
            Self::answer_async(core, &keyword, login, ctx, proof, &answer).await
        })
    }
}
