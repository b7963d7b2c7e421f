//! Who needs a second factor: `[[policy]]` rules by directory group, per door and per
//! RADIUS client, first match wins; no match, the default rule (`radius.unenrolled`:
//! `"reject"` is `required` with no deadline, `"password-only"` is `optional`). Pure:
//! the flow asks it after the user's entry is known, and `otpgate user status` and the
//! portal show what it says.

use otpgate_config::{Config, Date, PolicyDoor, PolicyRule, SecondFactor, Unenrolled};
use serde::Serialize;

/// What the rules ask of one user at one door.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "second_factor", rename_all = "kebab-case")]
pub enum Requirement {
    /// The password alone, even for a user who has a factor.
    Exempt,
    /// A user with a factor is asked for it; one without is let in with the password.
    Optional,
    /// A second factor is needed.
    Required {
        /// Until this UTC day (exclusive), a user with no factor is let in with a notice.
        #[serde(skip_serializing_if = "Option::is_none", serialize_with = "date_text")]
        enroll_by: Option<Date>,
        /// A user with no factor may enroll at the login where the door can show it.
        enroll_at_login: bool,
    },
}

fn date_text<S: serde::Serializer>(d: &Option<Date>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&d.to_string()),
        None => s.serialize_none(),
    }
}

/// What happens to a user with no second factor, today.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WithoutFactor {
    /// Let in with the password (`optional`).
    Admit,
    /// Let in with the password and told to enroll before the deadline.
    AdmitUntil(Date),
    /// Shown a new app secret and enrolled by a code, where the door can show it;
    /// refused elsewhere.
    EnrollAtLogin,
    /// Refused, and told where to enroll.
    Refuse,
}

impl Requirement {
    /// The rule for a user without a factor on `today` (a UTC day). `Exempt` users are
    /// let in before this is asked.
    pub fn without_factor(self, today: Date) -> WithoutFactor {
        match self {
            Requirement::Exempt | Requirement::Optional => WithoutFactor::Admit,
            Requirement::Required {
                enroll_by: Some(by),
                ..
            } if today < by => WithoutFactor::AdmitUntil(by),
            Requirement::Required {
                enroll_at_login: true,
                ..
            } => WithoutFactor::EnrollAtLogin,
            Requirement::Required { .. } => WithoutFactor::Refuse,
        }
    }

    /// The name shown in status output.
    pub fn name(self) -> &'static str {
        match self {
            Requirement::Exempt => "exempt",
            Requirement::Optional => "optional",
            Requirement::Required { .. } => "required",
        }
    }
}

/// Where a login comes from, as the rules see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place<'a> {
    pub door: PolicyDoor,
    /// The RADIUS client's name (also for a PAM host in server mode); `None` in PAM
    /// direct mode.
    pub client: Option<&'a str>,
}

/// The rules and the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    rules: Vec<PolicyRule>,
    default: Requirement,
}

impl Default for Policy {
    /// No rules; a second factor is required of everyone, with no deadline.
    fn default() -> Self {
        Self {
            rules: Vec::new(),
            default: Requirement::Required {
                enroll_by: None,
                enroll_at_login: false,
            },
        }
    }
}

impl Policy {
    /// `rules` in order, then `default`.
    pub fn new(rules: Vec<PolicyRule>, default: Requirement) -> Self {
        Self { rules, default }
    }

    /// From the configuration: `[[policy]]`, and `radius.unenrolled` as the default
    /// (`required` with no deadline when there is no `[radius]`).
    pub fn from_config(c: &Config) -> Self {
        let default = match c.radius.as_ref().map(|r| r.unenrolled) {
            Some(Unenrolled::PasswordOnly) => Requirement::Optional,
            Some(Unenrolled::Reject) | None => Policy::default().default,
        };
        Self::new(c.policy.clone(), default)
    }

    /// The rules.
    pub fn rules(&self) -> &[PolicyRule] {
        &self.rules
    }

    /// The first rule that matches the place and one of the user's groups, else the
    /// default.
    pub fn evaluate(&self, place: Place<'_>, groups: &[String]) -> Requirement {
        self.rules
            .iter()
            .find(|rule| applies(rule, place, groups))
            .map_or(self.default, requirement)
    }

    /// What the rules say of a user with `groups` at each door, and at each named client
    /// where a rule narrows by client: for status pages.
    pub fn describe(&self, groups: &[String]) -> Vec<PlaceRequirement> {
        let mut out = Vec::new();
        for door in [PolicyDoor::Radius, PolicyDoor::Pam] {
            out.push(PlaceRequirement {
                door: door.as_str(),
                client: None,
                requirement: self.evaluate(Place { door, client: None }, groups),
            });
        }
        let mut clients: Vec<&str> = Vec::new();
        for c in self.rules.iter().flat_map(|r| r.clients.iter()) {
            if !clients.contains(&c.as_str()) {
                clients.push(c);
            }
        }
        for client in clients {
            for door in [PolicyDoor::Radius, PolicyDoor::Pam] {
                let requirement = self.evaluate(
                    Place {
                        door,
                        client: Some(client),
                    },
                    groups,
                );
                let general = self.evaluate(Place { door, client: None }, groups);
                if requirement != general {
                    out.push(PlaceRequirement {
                        door: door.as_str(),
                        client: Some(client.to_string()),
                        requirement,
                    });
                }
            }
        }
        out
    }
}

impl PlaceRequirement {
    /// One line for people: "radius (client vpn): required, enroll by 2027-04-01".
    pub fn describe(&self) -> String {
        let place = match &self.client {
            Some(c) => format!("{} (client {c})", self.door),
            None => self.door.to_string(),
        };
        let mut text = format!("{place}: {}", self.requirement.name());
        if let Requirement::Required {
            enroll_by,
            enroll_at_login,
        } = self.requirement
        {
            if let Some(by) = enroll_by {
                text.push_str(&format!(", enroll by {by}"));
            }
            if enroll_at_login {
                text.push_str(", enrollment at the login");
            }
        }
        text
    }
}

/// The requirement at one door (and client), for status output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlaceRequirement {
    pub door: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    #[serde(flatten)]
    pub requirement: Requirement,
}

fn requirement(rule: &PolicyRule) -> Requirement {
    match rule.second_factor {
        SecondFactor::Exempt => Requirement::Exempt,
        SecondFactor::Optional => Requirement::Optional,
        SecondFactor::Required => Requirement::Required {
            enroll_by: rule.enroll_by,
            enroll_at_login: rule.enroll_at_login,
        },
    }
}

fn applies(rule: &PolicyRule, place: Place<'_>, groups: &[String]) -> bool {
    let door = rule.doors.is_empty() || rule.doors.contains(&place.door);
    let client = rule.clients.is_empty()
        || place
            .client
            .is_some_and(|c| rule.clients.iter().any(|r| r == c));
    door && client
        && rule
            .groups
            .iter()
            .any(|g| groups.iter().any(|m| group_matches(m, g)))
}

/// Whether a directory group value (`memberOf`: a DN such as
/// `cn=vpn-staff,ou=groups,dc=example,dc=org`, or a plain name) is the configured
/// `group`, which may be written as the whole DN or as the name (the first RDN's
/// value). Compared without case, as LDAP compares these.
pub fn group_matches(member_of: &str, group: &str) -> bool {
    if member_of.trim().eq_ignore_ascii_case(group.trim()) {
        return true;
    }
    let first_rdn = member_of.split(',').next().unwrap_or_default();
    match first_rdn.split_once('=') {
        Some((_, name)) => name.trim().eq_ignore_ascii_case(group.trim()),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(
        groups: &[&str],
        doors: &[PolicyDoor],
        clients: &[&str],
        sf: SecondFactor,
    ) -> PolicyRule {
        PolicyRule {
            groups: groups.iter().map(|g| g.to_string()).collect(),
            doors: doors.to_vec(),
            clients: clients.iter().map(|c| c.to_string()).collect(),
            second_factor: sf,
            enroll_by: None,
            enroll_at_login: false,
        }
    }

    fn day(text: &str) -> Date {
        Date::parse(text).unwrap()
    }

    const STAFF: &str = "cn=staff,ou=groups,dc=example,dc=org";

    fn policy() -> Policy {
        let mut vpn_staff = rule(
            &["staff"],
            &[PolicyDoor::Radius],
            &["vpn"],
            SecondFactor::Required,
        );
        vpn_staff.enroll_by = Some(day("2027-04-01"));
        let mut pam_staff = rule(&[STAFF], &[PolicyDoor::Pam], &[], SecondFactor::Required);
        pam_staff.enroll_at_login = true;
        Policy::new(
            vec![
                vpn_staff,
                pam_staff,
                rule(&["guests"], &[], &[], SecondFactor::Exempt),
                rule(&["staff"], &[], &[], SecondFactor::Optional),
            ],
            Requirement::Required {
                enroll_by: None,
                enroll_at_login: false,
            },
        )
    }

    fn at(door: PolicyDoor, client: Option<&str>) -> Place<'_> {
        Place { door, client }
    }

    #[test]
    fn first_match_by_door_client_and_group() {
        let p = policy();
        let staff = vec!["CN=Staff,OU=Groups,DC=example,DC=org".to_string()];
        let guest = vec!["guests".to_string()];
        let nobody: Vec<String> = vec![];
        assert_eq!(
            p.evaluate(at(PolicyDoor::Radius, Some("vpn")), &staff),
            Requirement::Required {
                enroll_by: Some(day("2027-04-01")),
                enroll_at_login: false
            }
        );
        // Another client: the vpn rule does not apply; the pam rule is not for RADIUS.
        assert_eq!(
            p.evaluate(at(PolicyDoor::Radius, Some("wifi")), &staff),
            Requirement::Optional
        );
        assert_eq!(
            p.evaluate(at(PolicyDoor::Pam, None), &staff),
            Requirement::Required {
                enroll_by: None,
                enroll_at_login: true
            }
        );
        // PAM direct mode has no client: a rule narrowed by client never matches it.
        assert_eq!(
            p.evaluate(at(PolicyDoor::Radius, None), &staff),
            Requirement::Optional
        );
        assert_eq!(
            p.evaluate(at(PolicyDoor::Pam, Some("vpn")), &guest),
            Requirement::Exempt
        );
        assert_eq!(
            p.evaluate(at(PolicyDoor::Radius, Some("vpn")), &nobody),
            Requirement::Required {
                enroll_by: None,
                enroll_at_login: false
            }
        );
    }

    #[test]
    fn a_deadline_admits_before_its_day_only() {
        let r = Requirement::Required {
            enroll_by: Some(day("2027-04-01")),
            enroll_at_login: false,
        };
        assert_eq!(
            r.without_factor(day("2027-03-31")),
            WithoutFactor::AdmitUntil(day("2027-04-01"))
        );
        assert_eq!(r.without_factor(day("2027-04-01")), WithoutFactor::Refuse);
        assert_eq!(r.without_factor(day("2999-01-01")), WithoutFactor::Refuse);
        let enroll = Requirement::Required {
            enroll_by: Some(day("2000-01-01")),
            enroll_at_login: true,
        };
        assert_eq!(
            enroll.without_factor(day("2026-12-07")),
            WithoutFactor::EnrollAtLogin
        );
        assert_eq!(
            enroll.without_factor(day("1999-12-31")),
            WithoutFactor::AdmitUntil(day("2000-01-01"))
        );
        assert_eq!(
            Requirement::Optional.without_factor(day("2026-12-07")),
            WithoutFactor::Admit
        );
        assert_eq!(
            Requirement::Exempt.without_factor(day("2026-12-07")),
            WithoutFactor::Admit
        );
    }

    #[test]
    fn describe_lists_doors_and_narrowing_clients() {
        let staff = vec![STAFF.to_string()];
        let places = policy().describe(&staff);
        let names: Vec<(&str, Option<&str>, &str)> = places
            .iter()
            .map(|p| (p.door, p.client.as_deref(), p.requirement.name()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("radius", None, "optional"),
                ("pam", None, "required"),
                ("radius", Some("vpn"), "required"),
            ]
        );
        let json = serde_json::to_value(&places[2]).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"door": "radius", "client": "vpn", "second_factor": "required",
                               "enroll_by": "2027-04-01", "enroll_at_login": false})
        );
    }

    #[test]
    fn groups_match_by_dn_or_name_without_case() {
        let dn = "cn=vpn-staff,ou=groups,dc=example,dc=org";
        assert!(group_matches(dn, "vpn-staff"));
        assert!(group_matches(dn, "VPN-Staff"));
        assert!(group_matches(
            dn,
            "CN=vpn-staff,ou=groups,dc=example,dc=org"
        ));
        assert!(group_matches("vpn-staff", "vpn-staff"));
        assert!(!group_matches(dn, "vpn"));
        assert!(!group_matches(dn, "groups"));
        assert!(!group_matches("cn=vpn-staff-x,ou=groups", "vpn-staff"));
    }
}
