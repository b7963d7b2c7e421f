//! `otpgate serve`: the long-running server.

use std::net::SocketAddr;
use std::sync::Arc;

use otpgate_config::Config;
use otpgate_core::Core;

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

/// Runs the doors of `config` on an opened core; `ready` gets the bound RADIUS addresses.
pub async fn run_doors(
    _config: Config,
    _core: Arc<Core>,
    _ready: impl FnOnce(&[SocketAddr]),
) -> Result<(), Failure> {
    Err(Failure::Config(
        "the RADIUS door is not built yet in this version".into(),
    ))
}
