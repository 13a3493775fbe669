"""Prefect flows: the `curate` DAG and its stage subflows."""
