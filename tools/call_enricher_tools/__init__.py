"""Developer tooling for call-enricher (CLI, Sinch sandbox, local stack, benchmarks).

Never shipped to Lambda: it lives outside ``layers/``.
"""
