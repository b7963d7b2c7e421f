//! `otpgate serve`: the long-running server.

use otpgate_config::Config;

use crate::Failure;

/// Runs the configured doors until SIGTERM.
pub async fn serve(config: Config) -> Result<(), Failure> {
    config.require_core()?;
    if config.radius.is_none() {
        return Err(Failure::Config(format!(
            "{}: [radius] is required for `otpgate serve`",
            config.path.display()
        )));
    }
    Err(Failure::Config(
        "the RADIUS door is not built yet in this version".into(),
    ))
}
