"""`mix --a DIR --b DIR --beta B [B ...] --out DIR [--only llm] [--extrapolate]`:
theta = B*a + (1-B)*b."""
import argparse
from pathlib import Path

HELP = ("mix two params checkpoints leaf by leaf: theta = beta*a + (1-beta)*b (several betas: "
        "OUT/beta_<B> each)")


def add_parser(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--a", type=Path, required=True, help="checkpoint weighted by beta")
  parser.add_argument("--b", type=Path, required=True, help="checkpoint weighted by 1 - beta")
  parser.add_argument("--beta", type=float, nargs="+", required=True,
                      help="mixing weight of --a; several values write OUT/beta_<B> for each")
  parser.add_argument("--out", type=Path, required=True, help="output directory (must not exist)")
  parser.add_argument("--only", default=None, metavar="SUBTREE",
                      help="mix only this top-level subtree (e.g. llm); copy the rest from --a")
  parser.add_argument("--extrapolate", action="store_true",
                      help="allow betas outside [0, 1] (beyond --a or --b); nan/inf never")


def run(args: argparse.Namespace) -> int:
  from sphinx_jax.checkpoints.mix import mix
  betas = args.beta[0] if len(args.beta) == 1 else args.beta
  out = mix(args.a, args.b, betas, args.out, only=args.only, extrapolate=args.extrapolate)
  print(f"wrote {out}")
  return 0
