"""Naive hand-written handlers: the baselines of the cold-start and speed-up figures.

What a competent developer writes in an afternoon with plain boto3 + requests + json: no
validation, enrichment, observability, retries, idempotency or connection reuse for Sinch.
They do the same job against the same stand-ins, so the ratios compare like with like.
"""
