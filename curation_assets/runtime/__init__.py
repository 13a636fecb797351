"""Processes beside Dagster's: the model and Great Expectations each in a process of its own, and the
allocator settings every process that decodes frames uses."""
