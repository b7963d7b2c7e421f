//! `otpgate demo`: a working otpgate with nothing installed. Placeholder until the
//! users-file directory and embedded store land.

use std::path::Path;

use crate::Failure;

pub async fn run(_dir: &Path, _radius_port: u16, _json: bool) -> Result<(), Failure> {
    Err(Failure::Config(
        "the demo is not built yet in this version".into(),
    ))
}
