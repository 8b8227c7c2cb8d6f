"""Entry point: `python -m launch --help` lists the commands; each has its own --help."""
import argparse
import logging
import sys

from launch import chat, convert, data, export, mix, serve, train
from launch import compile as compile_step
from launch import eval as evaluate
from sphinx_jax.util.errors import UserError

COMMANDS = {"train": train, "compile": compile_step, "convert": convert, "export": export,
            "chat": chat, "serve": serve, "data": data, "eval": evaluate, "mix": mix}


class _ShowDefaults(argparse.HelpFormatter):
  """Every option's help ends with its default, unless the help already says it or there is
  none to say (a flag, a required option, None)."""

  def _get_help_string(self, action: argparse.Action) -> str:
    text = action.help or ""
    if ("default" in text or action.required or action.default is argparse.SUPPRESS
        or any(action.default is nothing for nothing in (None, False, ""))):
      return text
    return f"{text} (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="python -m launch", description=__doc__)
  sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
  for name, module in COMMANDS.items():
    module.add_parser(sub.add_parser(name, help=module.HELP, description=module.HELP,
                                     formatter_class=_ShowDefaults))
  return parser


def main(argv=None) -> int:
  parser = build_parser()
  args, extra = parser.parse_known_args(argv)
  overrides = [a.removeprefix("--") for a in extra if a.startswith("--config.")]
  if len(overrides) != len(extra) or (overrides and args.command not in ("train", "data", "compile")):
    parser.error(f"unrecognized arguments: {' '.join(extra)}")
  # force: importing absl (through orbax) has already configured the root logger at WARNING.
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s",
                      force=True)
  logging.getLogger("absl").setLevel(logging.WARNING)  # Orbax's per-save chatter
  # Our errors (UserError) name the file / key; OSErrors (missing file, read-only directory, full
  # disk) the path: one line each. Anything else, a JAX tracing error included, is a bug and keeps
  # its traceback.
  try:
    if args.command in ("train", "data", "compile"):
      return COMMANDS[args.command].run(args, overrides) or 0
    return COMMANDS[args.command].run(args) or 0
  except (UserError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1


if __name__ == "__main__":
  sys.exit(main())
