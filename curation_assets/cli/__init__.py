"""The command line: `python -m curation_assets run | search` (headless runs, their live progress)."""
