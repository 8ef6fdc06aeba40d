"""Job-level errors the CLI turns into exit codes (config errors live in vipstream/config.py)."""


class JobError(RuntimeError):
    """The job ran but could not finish every unit of work; a rerun resumes where it stopped."""
