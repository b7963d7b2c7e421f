//! The helpdesk: the queue of users who asked for a code or a reset with no
//! notification address, and the 8-digit codes operators read out after checking
//! identity by phone. Also the audit reader.

use serde::Serialize;

use super::Core;
use crate::audit::{AuditRecord, Method, RequestContext};
use crate::clock::Timestamp;
use crate::error::CoreError;
use crate::random;
use crate::store::{CodeSlot, HelpdeskRequest, StoreBackend};
use crate::user::UserName;

/// A code issued by an operator.
#[derive(Debug, Clone, Serialize)]
pub struct IssuedOtp {
    pub user: String,
    pub otp: String,
    pub expires_at: String,
}

impl Core {
    /// The queue, oldest first.
    pub async fn helpdesk_queue(&self) -> Result<Vec<HelpdeskRequest>, CoreError> {
        self.store
            .list_helpdesk(self.now())
            .await
            .map_err(CoreError::from)
    }

    /// Issues an 8-digit code for `user` (email-OTP rules: valid for the configured
    /// time, single use, replaces the outstanding one) and clears their queued request.
    pub async fn helpdesk_issue(
        &self,
        user: &UserName,
        ctx: &RequestContext,
    ) -> Result<IssuedOtp, CoreError> {
        let outcome = self.helpdesk_issue_inner(user, ctx).await;
        self.audit_outcome(
            ctx,
            user,
            Method::HelpdeskIssue,
            "one-time code issued by an operator",
            &outcome,
        )
        .await;
        outcome
    }

    async fn helpdesk_issue_inner(
        &self,
        user: &UserName,
        ctx: &RequestContext,
    ) -> Result<IssuedOtp, CoreError> {
        self.activated_entry(user).await?;
        let code = random::decimal_code(self.random.as_ref(), self.settings.email_digits)?;
        let issued_by = format!("helpdesk:{}", ctx.client);
        let expires_at = self
            .issue_code(
                user,
                CodeSlot::Login,
                &code,
                self.settings.email_valid_for,
                None,
                &issued_by,
            )
            .await?;
        self.store.remove_helpdesk(user).await?;
        Ok(IssuedOtp {
            user: user.to_string(),
            otp: code,
            expires_at: expires_at.to_rfc3339(),
        })
    }

    /// Audit records since `since`, optionally for one user, oldest first.
    pub async fn audit_records(
        &self,
        since: Timestamp,
        user: Option<&UserName>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, CoreError> {
        let lines = self
            .store
            .read_audit(since, limit.saturating_mul(4).max(limit))
            .await?;
        let mut out = Vec::new();
        for line in lines {
            let record: AuditRecord = match serde_json::from_str(&line) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!("skipping an unreadable audit record: {e}");
                    continue;
                }
            };
            if user.is_none_or(|u| record.user == u.as_str()) {
                out.push(record);
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }
}
