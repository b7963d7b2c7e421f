//! `otpgate docs --out DIR` (hidden): the manual page `otpgate(8)` and the bash and zsh
//! completions, generated from the one definition of the command line in
//! [`crate::args`], so they cannot drift from `--help`. The package build runs it.

use std::path::Path;

use clap::CommandFactory;

use crate::Failure;
use crate::args::Args;

/// Writes `otpgate.8`, `otpgate.bash` and `_otpgate` into `out` (created if missing).
pub fn write(out: &Path) -> Result<(), Failure> {
    let io = |what: &str, e: std::io::Error| {
        Failure::Refused(format!("writing {what} in {}: {e}", out.display()))
    };
    std::fs::create_dir_all(out).map_err(|e| io("the folder", e))?;
    let mut command = Args::command();
    command.build();

    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone())
        .section("8")
        .render(&mut page)
        .map_err(|e| io("otpgate.8", e))?;
    // The subcommands, each with its own options and example, after the main page.
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        render_subcommand(&mut page, sub, "otpgate").map_err(|e| io("otpgate.8", e))?;
    }
    std::fs::write(out.join("otpgate.8"), page).map_err(|e| io("otpgate.8", e))?;

    for (shell, file) in [
        (clap_complete::Shell::Bash, "otpgate.bash"),
        (clap_complete::Shell::Zsh, "_otpgate"),
    ] {
        let mut text = Vec::new();
        clap_complete::generate(shell, &mut command, "otpgate", &mut text);
        std::fs::write(out.join(file), text).map_err(|e| io(file, e))?;
    }
    Ok(())
}

/// A section per leaf command: `otpgate user enroll` with its synopsis, arguments and
/// example (clap_mangen renders one command per page; these pages go after it).
fn render_subcommand(page: &mut Vec<u8>, sub: &clap::Command, parent: &str) -> std::io::Result<()> {
    let name = format!("{parent} {}", sub.get_name());
    if sub.has_subcommands() {
        for child in sub.get_subcommands().filter(|s| !s.is_hide_set()) {
            render_subcommand(page, child, &name)?;
        }
        return Ok(());
    }
    let mut text = Vec::new();
    let sub = sub
        .clone()
        .display_name(name.clone())
        .bin_name(name.clone());
    let man = clap_mangen::Man::new(sub);
    man.render_synopsis_section(&mut text)?;
    man.render_description_section(&mut text)?;
    man.render_options_section(&mut text)?;
    man.render_extra_section(&mut text)?;
    // Each piece starts with `.SH NAME`-level headings; demote them under one heading
    // for this command.
    let text = String::from_utf8_lossy(&text).replace(".SH ", ".SS ");
    page.extend_from_slice(format!(".SH \"{}\"\n", name.to_uppercase()).as_bytes());
    page.extend_from_slice(text.as_bytes());
    Ok(())
}
