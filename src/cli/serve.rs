//! `atp serve --config FILE`.

use std::path::Path;

use anyhow::Context as _;
use ocloudview_atp::{config::Config, server};

pub async fn run(config_path: &Path) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    tracing::info!(config = %config_path.display(), guests = config.guests.len(),
        hypervisors = config.hypervisors.len(), "starting atp daemon");
    server::serve(config, super::shutdown_signal())
        .await
        .context("daemon stopped with an error")
}
