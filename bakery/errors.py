"""The exceptions bakery raises; the invoke tasks turn them into exit codes."""


class BakeryError(Exception):
    """A problem the user can act on. `exit_code` is what the CLI exits with."""

    exit_code = 1


class BadInput(BakeryError):
    """Invalid config, CLI arguments or environment: fix the input and rerun (exit 2)."""

    exit_code = 2


class ConfigError(BadInput):
    """A config value is wrong; the message names the file and the key path."""

    def __init__(self, source: str, key_path: str, problem: str) -> None:
        self.source = source
        self.key_path = key_path
        self.problem = problem
        where = f"{source}: {key_path}" if key_path else source
        super().__init__(f"{where}: {problem}")


class MissingTool(BadInput):
    """A required host tool is not installed."""

    def __init__(self, tool: str, fix: str) -> None:
        super().__init__(f"{tool} is not installed or not on PATH: {fix}")


class OperationFailed(BakeryError):
    """A step failed while running (exit 1)."""
