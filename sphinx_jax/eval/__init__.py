"""Benchmark evaluation: format adapters, prompts, batched generation, metrics, the resumable
runner (see docs/architecture.md, Evaluation)."""
