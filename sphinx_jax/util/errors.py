"""The project's user-facing errors: bad input, a missing or mismatched file, a config that
cannot run. Each names the file, record or key and what to do. `launch` prints these (and
OSErrors) as one line; any other exception is a bug and keeps its traceback."""


class UserError(ValueError):
  """A ValueError (so `except ValueError` still catches it) that `launch` reports in one line."""
