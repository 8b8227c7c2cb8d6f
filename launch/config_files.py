"""Config files, as in big_vision: python files whose `get_config()` (or `get_config(arg)` for
`name:arg`) returns the config, then `--config.a.b=value` overrides.

A config is named by a path (`my_config.py:arg`) or by the name of one shipped with the package
(`default:fast` is launch/configs/default.py with arg "fast"): the names work from any
directory, installed or not. Override values are parsed as Python literals when they parse, else
kept as strings.
"""
from __future__ import annotations

import ast
import dataclasses
import importlib.util
from pathlib import Path
from typing import Any

from sphinx_jax.util.errors import UserError

SHIPPED = Path(__file__).resolve().parent / "configs"


def shipped() -> list[str]:
  """The names of the configs that come with the package (files defining get_config or DATA;
  not the helpers they share)."""
  return sorted(p.stem for p in SHIPPED.glob("*.py")
                if "\ndef get_config(" in (text := p.read_text()) or "\nDATA = " in text)


def resolve(spec: str) -> tuple[Path, str | None]:
  """'name[:arg]' or 'path.py[:arg]' -> (the file, arg or None)."""
  where, sep, arg = str(spec).partition(":")
  path = Path(where)
  if not path.is_file() and (SHIPPED / f"{where}.py").is_file() and "/" not in where:
    path = SHIPPED / f"{where}.py"
  if not path.is_file():
    raise FileNotFoundError(f"{where}: no such config file, and not a shipped config "
                            f"({', '.join(shipped())})")
  return path, arg if sep else None


def load_module(spec: str):
  """(the executed config file, arg or None)."""
  path, arg = resolve(spec)
  module_spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module, arg


def load(spec: str, overrides: list[str] = ()) -> Any:
  """`get_config()` (or `get_config(arg)`) of a config file with `key.path=value` overrides
  applied: a train.config.Experiment, or a recipe.chain.Recipe."""
  module, arg = load_module(spec)
  if not hasattr(module, "get_config"):
    raise UserError(f"{spec}: defines no get_config()")
  return apply_overrides(module.get_config() if arg is None else module.get_config(arg),
                         overrides)


def apply_overrides(config: Any, overrides: list[str]) -> Any:
  for item in overrides:
    key, sep, value = item.partition("=")
    if not sep:
      raise UserError(f"override {item!r} is not key.path=value")
    config = override(config, key.removeprefix("config.").split("."), _literal(value))
  return config


def override(config: Any, path: list[str], value: Any) -> Any:
  """A copy of dataclass `config` with the field at `path` set to `value`."""
  name = path[0]
  if not dataclasses.is_dataclass(config) or name not in {f.name for f in
                                                          dataclasses.fields(config)}:
    raise UserError(f"no config field {name!r} in {type(config).__name__}")
  if len(path) > 1:
    value = override(getattr(config, name), path[1:], value)
  elif isinstance(getattr(config, name), tuple) and isinstance(value, list):
    value = tuple(value)
  return dataclasses.replace(config, **{name: value})


def _literal(text: str) -> Any:
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text
