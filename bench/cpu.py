"""CPU per record: parse + validate + enrich + serialise over a few thousand varied records.

Two passes over the same records: **cold cache** (the phone-analysis LRU cache cleared, every
number new to it: the realistic case, since call IDs differ and most numbers are new) and
**warm cache** (the same records again: every number already analysed). The split times each
stage separately on the cold pass: validation (``parse_call_record`` of the raw bytes), phone
analysis (``phones.analyse_number`` of each party, cache cleared: a subset of enrichment),
enrichment (``enrich``, phone analysis included) and serialisation (``model_dump_json``).
Library modules and phonenumbers' metadata are loaded before timing (that is cold start).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from bench.records import RecordFactory
from bench.report import Figure, figure


def _median_ms(samples: list[int]) -> float:
    return statistics.median(samples) / 1e6


def run(quick: bool = False) -> list[Figure]:
    from call_enricher import phones
    from call_enricher.enrichment import enrich
    from call_enricher.model import parse_call_record

    count = 1000 if quick else 4000
    clock: Callable[[], int] = time.perf_counter_ns

    # Warm up the code paths and phonenumbers' lazily loaded metadata on other records.
    for body in RecordFactory(seed=1).bodies(300):
        enrich(parse_call_record(body)).model_dump_json()
    phones.preload()

    bodies = RecordFactory(seed=42).bodies(count)
    endpoints: list[list[str]] = []

    def one_pass(chunk: list[bytes]) -> tuple[list[int], list[int], list[int], list[int]]:
        total, parse, enr, ser = [], [], [], []
        for body in chunk:
            t0 = clock()
            record = parse_call_record(body)
            t1 = clock()
            enriched = enrich(record)
            t2 = clock()
            enriched.model_dump_json(by_alias=True)
            t3 = clock()
            total.append(t3 - t0)
            parse.append(t1 - t0)
            enr.append(t2 - t1)
            ser.append(t3 - t2)
        return total, parse, enr, ser

    phones._analyse.cache_clear()
    cold_total, cold_parse, cold_enrich, cold_ser = one_pass(bodies)
    # Warm: records whose numbers are all in the cache (two parties each: half its size).
    warm_set = bodies[: phones.CACHE_SIZE // 2 - 1]
    phones._analyse.cache_clear()
    one_pass(warm_set)
    warm_total = one_pass(warm_set)[0]

    # Phone analysis alone, cache cleared again (same numbers as the cold pass).
    for body in bodies:
        record: Any = parse_call_record(body)
        endpoints.append(
            [p.endpoint for p in (record.from_, record.to) if p is not None and p.endpoint]
        )
    phones._analyse.cache_clear()
    phone_samples = []
    for numbers in endpoints:
        t0 = clock()
        for endpoint in numbers:
            phones.analyse_number(endpoint)
        phone_samples.append(clock() - t0)

    distinct = len({e for numbers in endpoints for e in numbers})
    note = f"median of {count} varied records, {distinct} distinct endpoints"
    return [
        figure("cpu/record, cold phone cache", _median_ms(cold_total), "ms", "<= 0.5", note),
        figure(
            "cpu/record, warm phone cache",
            _median_ms(warm_total),
            "ms",
            "<= 0.5",
            f"{len(warm_set)} records again, every number cached (cache: {phones.CACHE_SIZE})",
        ),
        figure(
            "cpu/record, cold: mean",
            statistics.fmean(cold_total) / 1e6,
            "ms",
            note=f"p90 {statistics.quantiles(cold_total, n=10)[-1] / 1e6:.3f} ms",
        ),
        figure("  split: validation", _median_ms(cold_parse), "ms", note="parse_call_record"),
        figure("  split: enrichment", _median_ms(cold_enrich), "ms", note="enrich(), incl. phones"),
        figure(
            "  split: phone analysis",
            _median_ms(phone_samples),
            "ms",
            note="both parties, uncached",
        ),
        figure("  split: serialisation", _median_ms(cold_ser), "ms", note="model_dump_json"),
    ]
