"""Programs that run once per process (parameter initialisation): compiled for compile speed.

XLA:CPU spends most of an initialiser's compilation in LLVM, optimising one random draw per
parameter: 18 s for the tiny SPHINX's 166 arrays, 8 s without the optimisation, for a program
that runs once. Other backends compile as usual.
"""
from __future__ import annotations

from typing import Any, Callable

import jax

_QUICK_CPU_COMPILE = {"xla_backend_optimization_level": 0,
                      "xla_llvm_disable_expensive_passes": True}


def run_once(fn: Callable, *args, **jit_kwargs) -> Any:
  """`jax.jit(fn, **jit_kwargs)(*args)`, compiled without LLVM optimisation on CPU."""
  lowered = jax.jit(fn, **jit_kwargs).lower(*args)
  quick = jax.default_backend() == "cpu"
  return lowered.compile(compiler_options=_QUICK_CPU_COMPILE if quick else None)(*args)
