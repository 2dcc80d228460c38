"""The one exception type for user mistakes: the CLI prints it as one line and exits 2."""


class UserError(ValueError):
  """Bad input from the user (flag, config, data, path); not a bug."""
