"""Entry point: `python -m launch --help` lists the commands; each has its own --help."""
import argparse
import logging
import sys

from launch import chat, convert, data

COMMANDS = {"convert": convert, "chat": chat, "data": data}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m launch", description=__doc__)
  sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
  for name, module in COMMANDS.items():
    module.add_parser(sub.add_parser(name, help=module.HELP, description=module.HELP))
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
  try:
    return COMMANDS[args.command].run(args) or 0
  except (ValueError, FileNotFoundError) as e:  # our errors name the file / key: one line
    print(f"error: {e}", file=sys.stderr)
    return 1


if __name__ == "__main__":
  sys.exit(main())
