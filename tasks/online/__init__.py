"""Online schema changes: batched resumable backfills, and expand/contract on PostgreSQL.

`op.backfill` (backfill.py) fills columns of a live table in short batches, each its own
transaction, with its position kept in the database (bookkeeping.py) so a stopped run resumes;
progress.py reports it, pacing.py sizes its batches by time. `op.lock_retries()`
(lock_retries.py) runs brief DDL under a short lock_timeout, retried, so writers never queue
long behind it. expand_contract.py turns a model rename or a rewriting type change into two
revisions that keep old and new application code working in between.
"""
