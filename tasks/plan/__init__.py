"""What an upgrade or downgrade will do, before it does it, in text and Markdown."""
