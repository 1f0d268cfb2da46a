"""Training: losses, the LightningModule, callbacks, configuration and the run driver."""
