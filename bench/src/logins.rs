//! Which user logs in next, with the code of which step.
//!
//! The server accepts a TOTP step at most once per user, and only steps within
//! `skew_steps` of now. To send thousands of logins per second without a single
//! replay, the users take turns (round robin) and each user's next login uses the
//! step after its last one, never below the oldest step the server still accepts and
//! never above the newest. When the user whose turn it is has used every step up to
//! `now + skew_steps`, the schedule is exhausted until the clock moves on.

use otpgate_core::otp::totp::{self, TotpParams};
use otpgate_core::secret::TotpSecret;

/// One enrolled user of the benchmark.
pub struct BenchUser {
    /// The login name.
    pub name: String,
    /// The LDAP password.
    pub password: String,
    /// The TOTP secret the server holds (sealed) for this user.
    pub secret: TotpSecret,
    /// The last step the server accepted for this user (the enrollment's).
    pub last_step: u64,
}

/// One login to send: the user and the full User-Password (password then code).
pub struct Login {
    /// Index into the user list.
    pub user: usize,
    /// The TOTP step whose code is appended.
    pub step: u64,
    /// `password` followed by the code (append mode).
    pub user_password: String,
    /// The code alone (a client that checked the password itself).
    pub code: String,
}

/// The round-robin schedule of fresh (user, step) pairs.
pub struct Logins {
    users: Vec<BenchUser>,
    /// Whether every login uses the current step (a server that accepts only the
    /// current step and has no replay protection, like FreeRADIUS's rlm_totp), rather
    /// than walking each user through the server's window, each step used once
    /// (otpgate: replay protection).
    current_step_only: bool,
    /// Per user, the next step not yet used.
    next_step: Vec<u64>,
    /// Whose turn it is.
    cursor: usize,
    params: TotpParams,
}

impl Logins {
    /// A schedule over `users`, whose codes follow `params` (the server's `[totp]`).
    pub fn new(users: Vec<BenchUser>, params: TotpParams) -> Self {
        let next_step = users.iter().map(|u| u.last_step + 1).collect();
        Self {
            users,
            current_step_only: false,
            next_step,
            cursor: 0,
            params,
        }
    }

    /// A schedule over `users` in which every login uses the code of the current
    /// step: for a server without replay protection that accepts no other step.
    pub fn current_step(users: Vec<BenchUser>, params: TotpParams) -> Self {
        Self {
            current_step_only: true,
            ..Self::new(users, params)
        }
    }

    /// Whether every login uses the current step ([`Logins::current_step`]).
    pub fn is_current_step(&self) -> bool {
        self.current_step_only
    }

    /// The users.
    pub fn users(&self) -> &[BenchUser] {
        &self.users
    }

    /// The next login when the current step is `now_step`, or `None` when the user
    /// whose turn it is has no fresh step left in the accepted window.
    ///
    /// The step is kept one inside the window's old edge, so that a step boundary
    /// passing while the request is in flight does not make it stale.
    pub fn next(&mut self, now_step: u64) -> Option<Login> {
        let skew = u64::from(self.params.skew_steps);
        let user = self.cursor;
        let next = self.next_step.get_mut(user)?;
        let oldest = (now_step + 1).saturating_sub(skew);
        let step = if self.current_step_only {
            now_step
        } else {
            (*next).max(oldest)
        };
        if !self.current_step_only && step > now_step + skew {
            return None;
        }
        *next = step + 1;
        self.cursor = (self.cursor + 1) % self.users.len();
        let u = self.users.get(user)?;
        let code = totp::code_at_step(&u.secret, step, &self.params);
        Some(Login {
            user,
            step,
            user_password: format!("{}{code}", u.password),
            code,
        })
    }

    /// How many fresh logins the window holds at `now_step`, over all users
    /// (unbounded, `u64::MAX`, for [`Logins::current_step`]).
    pub fn capacity(&self, now_step: u64) -> u64 {
        if self.current_step_only {
            return u64::MAX;
        }
        let skew = u64::from(self.params.skew_steps);
        let newest = now_step + skew;
        let oldest = (now_step + 1).saturating_sub(skew);
        self.next_step
            .iter()
            .map(|&n| (newest + 1).saturating_sub(n.max(oldest)))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn params(skew_steps: u32) -> TotpParams {
        TotpParams {
            digits: 6,
            period: 30,
            skew_steps,
            algorithm: otpgate_config::TotpAlgorithm::Sha1,
        }
    }

    fn users(count: usize, last_step: u64) -> Vec<BenchUser> {
        (0..count)
            .map(|i| BenchUser {
                name: format!("user{i:04}"),
                password: format!("user{i:04}-pw"),
                secret: TotpSecret::from_bytes(format!("secret-of-user-{i:04}").as_bytes()),
                last_step,
            })
            .collect()
    }

    #[test]
    fn never_repeats_a_step_and_stays_in_the_window() {
        let now = 1_000;
        let mut logins = Logins::new(users(3, now - 2), params(2));
        assert_eq!(logins.capacity(now), 3 * 4);
        let mut seen = HashSet::new();
        while let Some(login) = logins.next(now) {
            assert!(login.step > now - 2 && login.step <= now + 2);
            assert!(seen.insert((login.user, login.step)), "repeated");
        }
        // steps now-1, now, now+1, now+2 for each user: the window after the last use
        assert_eq!(seen.len(), 3 * 4);
        assert_eq!(logins.capacity(now), 0);
        // the clock moves on: one more step each
        assert!(logins.next(now + 1).is_some());
    }

    #[test]
    fn skips_steps_that_fell_out_of_the_window() {
        let mut logins = Logins::new(users(1, 10), params(1));
        let login = logins.next(100).unwrap();
        assert_eq!(login.step, 100);
        assert!(login.user_password.starts_with("user0000-pw"));
        assert_eq!(login.user_password.len(), "user0000-pw".len() + 6);
        assert!(login.user_password.ends_with(&login.code));
        assert_eq!(login.code.len(), 6);
    }

    #[test]
    fn current_step_schedule_never_runs_out() {
        let now = 70;
        let mut logins = Logins::current_step(users(2, now), params(1));
        for _ in 0..10 {
            let login = logins.next(now).unwrap();
            assert_eq!(login.step, now);
        }
        assert_eq!(logins.next(now + 1).unwrap().step, now + 1);
    }

    #[test]
    fn takes_turns() {
        let now = 50;
        let mut logins = Logins::new(users(2, now), params(3));
        let order: Vec<usize> = (0..4).map(|_| logins.next(now).unwrap().user).collect();
        assert_eq!(order, [0, 1, 0, 1]);
    }
}
