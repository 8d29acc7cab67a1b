"""The error a user can act on: something handed to r1jax (a value, a file, a directory, a
checkpoint) is wrong, as opposed to a bug in r1jax.

An entry point's `main` (`r1jax.experiment.main`) prints a `UserError` as one line,
`error: <what>: <file or field>: <why>; <what to do>`, and exits with status 2; any other exception
keeps its traceback (that one is a bug to report).
"""
from __future__ import annotations

import functools


class UserError(ValueError):
  """A bad input, named: `UserError(what, where, why, todo)`.

  A ValueError, so code that already catches a validation error catches this one too.
  """

  prefix = "error: "
  """How an entry point starts the printed line."""

  def __init__(self, what: str, where: str, why: str, todo: str):
    self.what, self.where, self.why, self.todo = what, str(where), why, todo
    super().__init__(one_line(f"{what}: {where}: {why}; {todo}"))


def one_line(text: str) -> str:
  """`text` with every line break and run of blanks folded into one space."""
  return " ".join(str(text).split())


class ConfigError(UserError):
  """A config value that validation refuses (its message names the field, the value and what is
  allowed); printed as `config error: <message>`."""
  prefix = "config error: "

  def __init__(self, message: str):
    self.what, self.where, self.why, self.todo = "config", "", str(message), ""
    ValueError.__init__(self, one_line(message))


def config_errors(fn):
  """`fn` with every plain ValueError it raises turned into a ConfigError (for the validation
  functions, whose ValueErrors all name a config field), so an entry point tells it from a bug."""

  @functools.wraps(fn)
  def wrapped(*args, **kwargs):
    try:
      return fn(*args, **kwargs)
    except UserError:
      raise
    except ValueError as e:
      raise ConfigError(str(e)) from e

  return wrapped
