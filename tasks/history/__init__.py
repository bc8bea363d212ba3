"""The history you can trust and keep short: checksums of applied revisions, and squash."""
