"""Training: the Hydra app and its run-dir policy (app, claim, method_settings, sweep_objective),
setup and build from a config, the loop, batches, checkpoints, interrupts, distributed helpers and
the step benchmark."""
