"""Training: the Hydra app (app) and its run-dir policy (run_dir, job, sweep, hydra_workarounds, claim,
method_overrides, sweep_objective), setup and build from a config, the loop, batches, checkpoints,
interrupts, distributed helpers and the step benchmark."""
