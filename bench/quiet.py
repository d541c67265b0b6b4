"""Console hygiene shared by the CLI and its worker processes."""


def quiet_libraries() -> None:
    """Keep the console to rnnbench's own lines: Lightning's info banners and tips are noise here."""
    import logging
    import warnings

    import lightning  # noqa: F401 - it sets its loggers' levels on import, so import before overriding

    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*litlogger.*")
    # a run that resumes finds its own checkpoint folders filled: expected
    warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")
    # on a machine with SLURM's tools installed, Lightning suggests srun for every local run
    warnings.filterwarnings("ignore", message=".*The `srun` command is available on your system but is not used.*")
    # the runner's first ModelCheckpoint is the best-epoch one, which the test is meant to use
    warnings.filterwarnings("ignore", message=".*is called with Trainer configured with multiple `ModelCheckpoint`.*")
