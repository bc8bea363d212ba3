"""Squash a long history into one baseline revision, proven equal before it is written."""
