"""`python -m launch <command>`: the command line of sphinx-jax."""

# models.quantization.SCHEMES, spelled out so that `--help` imports no JAX (tests/test_cli.py
# checks they agree)
QUANTIZE = ("int8", "int4", "nf4")
