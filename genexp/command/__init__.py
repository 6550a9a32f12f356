"""The commands around the trainer (genexp.train): `genexp train` as a Hydra application with its
run-dir claims and policy, sweeps, signals and sweep objective, and `genexp bench`."""
