"""Grading a class: which notebooks run (the plan), running them in parallel, progress, calibration runs."""
