"""What a pipeline verifies on every change to the migrations."""
