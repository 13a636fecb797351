"""Great Expectations suites as code (``suites``): plain functions of GX's expectation classes,
run by ``resources.expectations``."""
