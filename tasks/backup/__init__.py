"""Backups and restores, one routine per dialect."""
