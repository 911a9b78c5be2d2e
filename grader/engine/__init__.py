"""Grading one notebook: the pipeline's steps, execution in a kernel, the reference run."""
