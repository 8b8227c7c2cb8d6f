"""The recipe layer: SPHINX's whole method as one resumable run (chain: world -> stage 0 ->
stage 1 -> mixing -> stage 2 -> report) and what only the recipe needs (the report, held-out
losses, the towers' zero-shot and probe scores, the synthetic benchmarks)."""
