"""Production shape: docker/'s topology as plain processes, and the run launcher of docker/dagster.yaml."""
