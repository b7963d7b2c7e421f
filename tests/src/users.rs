//! The test users every [`Slapd`](crate::Slapd) starts with, and the generated bulk
//! users for benchmarks.

use crate::codec::dn_escape;

/// The directory's suffix.
pub const SUFFIX: &str = "dc=example,dc=org";
/// Where users live (the product's `directory.base_dn`).
pub const PEOPLE_DN: &str = "ou=people,dc=example,dc=org";
/// Where groups live.
pub const GROUPS_DN: &str = "ou=groups,dc=example,dc=org";
/// The `activated_filter` the harness's config uses: users with
/// `employeeType: disabled` are not activated.
pub const ACTIVATED_FILTER: &str = "(!(employeeType=disabled))";

/// A user in the test directory. Entries are `inetOrgPerson` under [`PEOPLE_DN`] with
/// `uid`, `cn`, `sn`, an `{SSHA}` `userPassword`, `employeeType` (`active` or
/// `disabled`), `mail` when given, and `memberOf` (by the memberof overlay) for every
/// group in `groups` (each a `groupOfNames` `cn=GROUP,ou=groups,dc=example,dc=org`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestUserSpec<'a> {
    /// The login name (`uid`).
    pub uid: &'a str,
    /// The LDAP password.
    pub password: &'a str,
    /// The `mail` attribute, if any.
    pub mail: Option<&'a str>,
    /// Group common names; the user gets `memberOf: cn=G,ou=groups,dc=example,dc=org`.
    pub groups: &'a [&'a str],
    /// Whether the user matches [`ACTIVATED_FILTER`].
    pub activated: bool,
}

/// The built-in test users.
pub type TestUser = TestUserSpec<'static>;

impl TestUserSpec<'_> {
    /// The entry's DN, with the uid escaped per RFC 4514.
    pub fn dn(&self) -> String {
        user_dn(self.uid)
    }

    /// The `memberOf` values this user should have.
    pub fn group_dns(&self) -> Vec<String> {
        self.groups.iter().map(|group| group_dn(group)).collect()
    }
}

/// The DN of the user `uid`.
pub fn user_dn(uid: &str) -> String {
    format!("uid={},{PEOPLE_DN}", dn_escape(uid))
}

/// The DN of the group `cn`.
pub fn group_dn(cn: &str) -> String {
    format!("cn={},{GROUPS_DN}", dn_escape(cn))
}

/// Activated, with mail, in `vpn-staff` and `otp-admins`.
pub const ALICE: TestUser = TestUserSpec {
    uid: "alice",
    password: "alice-pw-1",
    mail: Some("alice@example.org"),
    groups: &["vpn-staff", "otp-admins"],
    activated: true,
};

/// Activated, no `mail` attribute, in `students`.
pub const BOB: TestUser = TestUserSpec {
    uid: "bob",
    password: "bob-pw-2",
    mail: None,
    groups: &["students"],
    activated: true,
};

/// Not activated (`employeeType: disabled`); has mail, in no group.
pub const CAROL: TestUser = TestUserSpec {
    uid: "carol",
    password: "carol-pw-3",
    mail: Some("carol@example.org"),
    groups: &[],
    activated: false,
};

/// Activated, with mail, in `vpn-staff`.
pub const DAVE: TestUser = TestUserSpec {
    uid: "dave",
    password: "dave-pw-4",
    mail: Some("dave@example.org"),
    groups: &["vpn-staff"],
    activated: true,
};

/// A uid made of RFC 4515 filter metacharacters: an unescaped filter
/// `(uid=weird*(user)\)` is malformed or matches the wrong entries.
pub const WEIRD: TestUser = TestUserSpec {
    uid: "weird*(user)\\",
    password: "weird-pw-5",
    mail: None,
    groups: &[],
    activated: true,
};

/// Exists so that an unescaped `alice*` matches two entries.
pub const ALICEX: TestUser = TestUserSpec {
    uid: "alicex",
    password: "alicex-pw-6",
    mail: Some("alicex@example.org"),
    groups: &[],
    activated: true,
};

/// Every built-in test user, in the order they are added.
pub const USERS: &[TestUser] = &[ALICE, BOB, CAROL, DAVE, WEIRD, ALICEX];

/// The uid of bulk user `index`: `user0000`, `user0001`, …
pub fn bulk_uid(index: usize) -> String {
    format!("user{index:04}")
}

/// The password of bulk user `index`: `user0000-pw`, …
pub fn bulk_password(index: usize) -> String {
    format!("{}-pw", bulk_uid(index))
}

/// The mail of bulk user `index`: `user0000@example.org`, …
pub fn bulk_mail(index: usize) -> String {
    format!("{}@example.org", bulk_uid(index))
}
