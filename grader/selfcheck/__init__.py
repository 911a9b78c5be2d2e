"""Student self-check: the grader's own run and verdicts, on the visible checks only.

engine.py   runs one notebook with the grader's steps against the reference's public events
diagnose.py explains the environment, the saved notebook and the run (never changes a verdict)
text.py     prints the result as a table on any console encoding
student.py  the main of the downloaded assignments/<id>/selfcheck.py (see grader.selfcheck.bundle)

`grader check NOTEBOOK` (grader.selfcheck.project) uses the same engine inside the project.
Importing this package imports nothing heavy: student.py diagnoses the environment first.
"""
