"""Errors a user can fix: the CLI prints them as one line and exits with status 2."""


class UserError(Exception):
    """Bad input from the user (a pipeline file, a --set override, a missing dataset or model)."""


class PipelineError(UserError):
    """A pipeline file that cannot run: names the file, the key and what was expected."""

    def __init__(self, file: str, key: str, message: str):
        self.file, self.key = file, key
        super().__init__(f"{file}: {key}: {message}")
