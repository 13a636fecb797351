"""Great Expectations suites as code (``suites``): plain functions of GX's expectation classes,
run by ``curation_assets.runtime.validation_process`` for ``resources.expectations``."""
