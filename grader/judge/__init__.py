"""The trusted side's verdicts: check kinds turn evidence into observations, verdicts into scored results."""
