"""Prefect tasks: one generic task (`stage.run_stage`) runs every stage function; `common` holds what they share."""
