"""What the judge reads: the kernel's signed evidence and the grader's own evaluation of the saved model."""
