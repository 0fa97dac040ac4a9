"""Library code behind the Snakemake workflow: config validation, the run plan, checkpoint selection.

The rules in `workflow/rules/*.smk` only wire paths and parameters; the decisions live here so
that they are testable without Snakemake.
"""
