"""Scoring or comparing a JSONL file of inputs: several at once on a model on a server, each result appended to
an output JSONL file as it finishes, a progress bar, and a rerun that resumes where an interrupted one stopped.

    from decodelab.batch import score_jsonl, compare_jsonl
    lm = decodelab.load("http://127.0.0.1:8000/v1")
    score_jsonl(lm, "texts.jsonl", "scores.jsonl", concurrency=8)  # the CLI: decodelab score --jsonl IN --out OUT

`inputs` reads and checks the input file, `results_file` owns the output file (whole lines, resuming),
`runner` runs the work on threads, `jobs` says what scoring and comparing do with one line.
"""

from decodelab.batch.jobs import DEFAULT_CONCURRENCY, compare_jsonl, score_jsonl, workers_for
from decodelab.batch.runner import BatchStopped, BatchSummary, run_jsonl

__all__ = [
    "DEFAULT_CONCURRENCY",
    "BatchStopped",
    "BatchSummary",
    "compare_jsonl",
    "run_jsonl",
    "score_jsonl",
    "workers_for",
]
