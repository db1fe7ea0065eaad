"""The command-line front-end: parse arguments, call the engine, print. Nothing else."""
