//! A real `sshd` (UsePAM, keyboard-interactive only) whose PAM stack loads
//! `pam_otpgate.so` in direct mode with `mode=password+otp remember`, logged into by a
//! scripted paramiko client: a wrong code fails, the right one succeeds, and a second
//! login from the same host is let in after the password alone.

use otpgate_tests::{
    LocalUser, PamModule, PamStack, Sshd, TestUserSpec, files::random_bytes, ssh_login,
};

use crate::pam::direct_env;
use crate::radius::{code, enroll};

#[test]
fn ssh_logins_with_password_and_code_then_remembered_host() {
    let e = direct_env();
    let suffix: String = random_bytes(3)
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let name = format!("otpssh{suffix}");
    let password = "ssh-user-pw-7";
    e.slapd
        .add_user(&TestUserSpec {
            uid: &name,
            password,
            mail: None,
            groups: &[],
            activated: true,
        })
        .unwrap();
    let user = LocalUser::create(&name).unwrap();
    let secret = enroll(e.config.path(), &name, e.base);

    let stack = PamStack::with_module(PamModule::Direct).unwrap();
    stack
        .service(
            "sshd",
            &format!(
                "config={} mode=password+otp remember",
                e.pam_config.display()
            ),
        )
        .unwrap();
    let sshd = Sshd::start(&stack).unwrap();

    let wrong = ssh_login(sshd.port(), user.name(), &[password, "000000"]).unwrap();
    assert!(!wrong.ok, "{}\n{}", wrong.output, sshd.log());
    assert_eq!(
        wrong.prompts,
        ["Password: ", "One-time password: "],
        "{}\n{}",
        wrong.output,
        sshd.log()
    );

    let right = code(&secret, e.base);
    let ok = ssh_login(sshd.port(), user.name(), &[password, &right]).unwrap();
    assert!(ok.ok, "{}\n{}", ok.output, sshd.log());
    assert_eq!(ok.prompts, ["Password: ", "One-time password: "]);

    // Remembered by host (127.0.0.1): the password alone.
    let again = ssh_login(sshd.port(), user.name(), &[password]).unwrap();
    assert!(again.ok, "{}\n{}", again.output, sshd.log());
    assert_eq!(again.prompts, ["Password: "]);

    // The password is still checked.
    let bad = ssh_login(sshd.port(), user.name(), &["not-the-password"]).unwrap();
    assert!(!bad.ok, "{}", bad.output);
}
