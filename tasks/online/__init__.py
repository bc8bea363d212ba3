"""Online schema changes: batched resumable backfills, and expand/contract on PostgreSQL.

`op.backfill` (backfill.py) fills columns of a live table in short batches, each its own
transaction, with its position kept in the database (bookkeeping.py) so a stopped run resumes;
progress.py reports it. expand_contract.py turns a model rename or a rewriting type change into
two revisions that keep old and new application code working in between.
"""
