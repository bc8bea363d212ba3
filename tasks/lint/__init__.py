"""Classifying the SQL a revision runs: what needs a human's consent, and why."""
