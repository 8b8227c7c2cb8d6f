"""The command line as people expect it: every option explained with its default, the project's
errors in one line, anything else (a bug, a JAX tracing error) with its traceback."""
from __future__ import annotations

import argparse

import pytest

from launch import __main__ as cli
from sphinx_jax.util.errors import UserError


def _options():
  parser = cli.build_parser()
  commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
  for name, sub in commands.choices.items():
    for action in sub._actions:
      if action.option_strings and action.dest != "help":
        yield name, action, sub


@pytest.mark.parametrize("name,action,sub", list(_options()),
                         ids=lambda x: x if isinstance(x, str) else None)
def test_every_option_has_help_that_states_its_default(name, action, sub):
  assert action.help, f"{name} {action.option_strings[0]}: no help text"
  text = sub.formatter_class(prog="x")._get_help_string(action)
  has_default = not (action.required or action.default in (None, "") or action.default is False)
  assert not has_default or "default" in text, (name, action.option_strings, text)


def _failing(monkeypatch, error: Exception):
  def run(args, *rest):
    raise error
  monkeypatch.setattr(cli.COMMANDS["mix"], "run", run)
  return ["mix", "--a", "x", "--b", "y", "--beta", "0.5", "--out", "z"]


def test_a_user_error_is_one_line(monkeypatch, capsys):
  argv = _failing(monkeypatch, UserError("x/config.json: not a SPHINX config"))
  assert cli.main(argv) == 1
  assert capsys.readouterr().err == "error: x/config.json: not a SPHINX config\n"


@pytest.mark.parametrize("error", [ValueError("Incompatible shapes for broadcasting"),
                                   TypeError("unsupported operand")])
def test_any_other_error_keeps_its_traceback(monkeypatch, error):
  with pytest.raises(type(error), match=str(error)):
    cli.main(_failing(monkeypatch, error))


def test_the_quantize_choices_are_the_schemes():
  from launch import QUANTIZE
  from sphinx_jax.models.quantization import SCHEMES
  assert QUANTIZE == SCHEMES
