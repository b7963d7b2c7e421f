//! Human or JSON output, chosen by `--json`.

use serde::Serialize;

/// Prints `value` as one JSON line, or the human text.
pub fn print<T: Serialize>(json: bool, value: &T, human: impl FnOnce() -> String) {
    if json {
        match serde_json::to_string(value) {
            Ok(line) => println!("{line}"),
            Err(e) => eprintln!("otpgate: cannot print JSON: {e}"),
        }
    } else {
        println!("{}", human());
    }
}
