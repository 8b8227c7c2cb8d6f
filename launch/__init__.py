"""`python -m launch <command>`: the command line of sphinx-jax."""
