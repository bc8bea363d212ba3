"""The base everything stands on: errors and exit codes, settings, environments and URLs, engines,
models, masking, output, prompts, the run record and the Session."""
